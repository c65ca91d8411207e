-- Caches a product's rating totals unless the cache already holds totals at least as recent.
--
-- KEYS[1]  the product's rating totals   ({prefix}rating:{<product>}), "count:sum"
-- ARGV[1]  review count
-- ARGV[2]  sum of the ratings
-- ARGV[3]  time to live, in milliseconds
--
-- Reviews are only ever added, so the larger count is the more recent total: whichever order
-- concurrent writers arrive in, the totals computed after the last review win. Returns 1 when
-- the totals were stored, 0 when newer ones were already there.

local current = redis.call('GET', KEYS[1])
if current then
  local count = tonumber(string.match(current, '^(%d+):'))
  if count and count >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
