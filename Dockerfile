# One image for all Tollgate binaries. Build: docker build -t tollgate .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate-cli -p tollgate-api -p tollgate-operator \
 && cargo build --profile sidecar --locked -p tollgate-sidecar \
 && mkdir /out \
 && cp target/release/tollgate target/release/kubectl-approve target/release/crdgen \
       target/release/tollgate-operator target/sidecar/tollgate-sidecar /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot
ENTRYPOINT ["/usr/local/bin/tollgate-operator"]
