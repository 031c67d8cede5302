-- "refresh": issue a new token now (not while the identity is being deleted).
local actions = {}
actions["refresh"] = {["disabled"] = obj.metadata.deletionTimestamp ~= nil}
return actions
