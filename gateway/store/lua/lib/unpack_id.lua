-- An api_id from a due queue or a ref bucket, where a canonical UUID is kept as 17 bytes
-- (gateway.store.records.packed_id): NUL, then its 16 bytes.
local function unpack_id(v)
  if #v == 17 and string.byte(v, 1) == 0 then
    return string.format('%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x',
                         string.byte(v, 2, 17))
  end
  return v
end
