# One image for every Tollgate binary: the operator (the default entrypoint), the model gateway,
# the sidecar (also transparent mode's init step, `tollgate-sidecar redirect`, which needs
# iptables), and the CLIs.
# Build: docker build -t tollgate .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate-cli -p tollgate-api \
 && cargo build --profile shipped --locked -p tollgate-sidecar -p tollgate-gateway \
 && cargo build --profile shipped-small --locked -p tollgate-operator \
 && mkdir /out \
 && cp target/release/tollgate target/release/kubectl-approve target/release/crdgen \
       target/shipped-small/tollgate-operator target/shipped/tollgate-gateway target/shipped/tollgate-sidecar /out/

# Debian slim rather than distroless: the redirect needs iptables (nf_tables) and the sidecar
# trusts the platform's CA certificates for https:// MCP servers.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The sidecar's UID (injection runs it as 65532; transparent mode exempts that UID's traffic).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tollgate-operator"]
