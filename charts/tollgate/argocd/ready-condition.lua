-- A suspended object (a ManagedAgent's kill switch) is Suspended; otherwise its Ready condition
-- decides, Healthy until one is written. One script for every kind whose status reads this way.
local hs = {}
local function ready(obj)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == "Ready" then
        return c
      end
    end
  end
  return nil
end
local c = ready(obj)
if obj.spec ~= nil and obj.spec.suspended == true then
  hs.status = "Suspended"
  hs.message = "the kill switch is on: every call is refused"
elseif c == nil then
  hs.status = "Healthy"
  hs.message = "no condition reported"
elseif c.status == "True" then
  hs.status = "Healthy"
  hs.message = c.message or "ready"
elseif c.status == "False" then
  hs.status = "Degraded"
  hs.message = (c.reason or "NotReady") .. ": " .. (c.message or "")
else
  hs.status = "Progressing"
  hs.message = c.message or "not ready yet"
end
return hs
