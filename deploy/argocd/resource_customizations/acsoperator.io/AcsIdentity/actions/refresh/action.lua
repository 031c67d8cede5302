-- The operator issues a new token once for each new value of this annotation.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["acsoperator.io/refresh-requested"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
