-- Health from the Ready condition the operator maintains; Progressing until it has written one.
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
if c == nil or (obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to load the policy"
elseif c.status == "True" then
  hs.status = "Healthy"
  hs.message = c.message or "loaded"
else
  hs.status = "Degraded"
  hs.message = (c.reason or "NotReady") .. ": " .. (c.message or "")
end
return hs
