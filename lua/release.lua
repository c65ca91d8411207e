-- Ends an order's reservation, returning its stock; idempotent.
--
-- KEYS[1]        the order's reservation record      ({prefix}reservation:{<order>})
-- KEYS[2i]       line i's available counter          ({prefix}stock:{<product>}:available)
-- KEYS[2i+1]     line i's held counter               ({prefix}stock:{<product>}:held)
-- ARGV[i]        line i's product id, for i = 1..n
--
-- Returns 1 when this call gave stock back, 0 when there was nothing to give back: already
-- released, refused, or never reserved. In the last case the record becomes a tombstone
-- ('released') so that a reserve arriving late is refused. Quantities come from the record,
-- not the caller, so a release can only give back what was taken.

local n = #ARGV
if #KEYS ~= 2 * n + 1 then
  return redis.error_reply('ERR release: expected 2n+1 keys and n arguments')
end

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'released' then
  return 0
end
if state == 'reserved' then
  for i = 1, n do
    local q = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
    if q > 0 then
      redis.call('INCRBY', KEYS[2 * i], q)
      redis.call('DECRBY', KEYS[2 * i + 1], q)
    end
  end
  redis.call('HSET', KEYS[1], 'state', 'released')
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'released')
return 0
