-- A request waiting for people is Progressing; an approved one Healthy; one that ended without
-- approval (denied, expired, cancelled) Degraded, since its call did not run.
local hs = {}
local phase = obj.status ~= nil and obj.status.phase or nil
if phase == nil or phase == "Pending" then
  hs.status = "Progressing"
  local approvals = obj.status ~= nil and obj.status.approvals or nil
  hs.message = "waiting for approval" .. (approvals ~= nil and (" (" .. approvals .. ")") or "")
elseif phase == "Approved" then
  hs.status = "Healthy"
  hs.message = "approved"
else
  hs.status = "Degraded"
  hs.message = phase .. ": the held call did not run"
end
return hs
