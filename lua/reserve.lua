-- Reserves every line of an order, or none: atomically, once per order.
--
-- KEYS[1]        the order's reservation record      ({prefix}reservation:{<order>})
-- KEYS[2i]       line i's available counter          ({prefix}stock:{<product>}:available)
-- KEYS[2i+1]     line i's held counter               ({prefix}stock:{<product>}:held)
-- ARGV[i]        line i's quantity (a positive integer), for i = 1..n
-- ARGV[n+i]      line i's product id (the record's field for the line)
--
-- Returns {outcome, line, available}:
--   {1, 0, 0}          reserved (now, or by an earlier call: the first answer is replayed)
--   {0, i, available}  refused: line i wants more than is available; nothing was reserved
--   {2, 0, 0}          refused: the order was released first (a tombstone), so this late
--                      reserve must not take stock nobody will give back
-- The record never expires: only release.lua ends a reservation. A refusal is recorded too, so
-- a redelivered command cannot reserve later what the saga was told it could not.

local n = #ARGV / 2
if n < 1 or n ~= math.floor(n) or #KEYS ~= 2 * n + 1 then
  return redis.error_reply('ERR reserve: expected 2n+1 keys and 2n arguments')
end
for i = 1, n do
  local q = tonumber(ARGV[i])
  if q == nil or q < 1 or q ~= math.floor(q) then
    return redis.error_reply('ERR reserve: quantities must be positive integers')
  end
end

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'reserved' then
  return { 1, 0, 0 }
elseif state == 'released' then
  return { 2, 0, 0 }
elseif state == 'rejected' then
  return { 0, tonumber(redis.call('HGET', KEYS[1], 'short')), 0 }
end

for i = 1, n do
  local available = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if available < tonumber(ARGV[i]) then
    redis.call('HSET', KEYS[1], 'state', 'rejected', 'short', i)
    return { 0, i, available }
  end
end

for i = 1, n do
  redis.call('DECRBY', KEYS[2 * i], ARGV[i])
  redis.call('INCRBY', KEYS[2 * i + 1], ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[n + i], ARGV[i])
end
redis.call('HSET', KEYS[1], 'state', 'reserved')
return { 1, 0, 0 }
