-- A budget past its hard limit refuses calls: Degraded; past its soft limit: still Healthy, with a warning.
local hs = {}
local state = obj.status ~= nil and obj.status.state or nil
if state == "HardExceeded" then
  hs.status = "Degraded"
  hs.message = "hard limit reached: calls under this budget are refused"
elseif state == "SoftExceeded" then
  hs.status = "Healthy"
  hs.message = "soft limit reached"
else
  hs.status = "Healthy"
  hs.message = state or "no spend reported"
end
return hs
