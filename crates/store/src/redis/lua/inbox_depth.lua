-- depth: KEYS[1] = inbox stream. Returns its depth (see inbox_depth).
return inbox_depth(KEYS[1], redis.call('XLEN', KEYS[1]) + 1)
