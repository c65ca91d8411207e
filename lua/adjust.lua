-- Changes a product's available stock by a signed delta, atomically and at most once per
-- adjustment id; available stock never goes below zero.
--
-- KEYS[1]  the product's available counter          ({prefix}stock:{<product>}:available)
-- KEYS[2]  the adjustment's outcome marker           ({prefix}stock:{<product>}:adj:<adjustment>)
-- ARGV[1]  delta (a non-zero integer)
--
-- Returns {applied, available}: applied is 1 when the delta was (now or earlier) applied and 0
-- when it was refused for lack of stock; available is the counter after this call.
-- A replay returns the first outcome with the current counter and changes nothing, so the
-- caller may retry freely after a crash or a lost reply. Both keys share the product's hash tag,
-- so the script stays valid on Redis Cluster.

local delta = tonumber(ARGV[1])
if delta == nil or delta == 0 or delta ~= math.floor(delta) then
  return redis.error_reply('ERR adjust: delta must be a non-zero integer')
end

local available = tonumber(redis.call('GET', KEYS[1]) or '0')

local outcome = redis.call('GET', KEYS[2])
if outcome then
  return { outcome == 'applied' and 1 or 0, available }
end

if available + delta < 0 then
  redis.call('SET', KEYS[2], 'refused')
  return { 0, available }
end

available = redis.call('INCRBY', KEYS[1], delta)
redis.call('SET', KEYS[2], 'applied')
return { 1, available }
