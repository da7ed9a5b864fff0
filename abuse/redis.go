package abuse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is Counters shared by a fleet. Each operation is one script run
// atomically by the server, on the server's clock, so replicas whose
// clocks differ still share one bucket and one window.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis uses c, naming every key with prefix.
func NewRedis(c redis.UniversalClient, prefix string) *Redis { return &Redis{c: c, prefix: prefix} }

// take refills the bucket for the time since it was last used, then takes
// a token if there is one. It returns {1, 0} or {0, ms until a token}.
var take = redis.NewScript(`
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local ok, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
else
  retry = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {ok, retry}
`)

// touch adds the members with the server's time as their score, drops
// those older than the window, and returns {distinct, added}.
var touch = redis.NewScript(`
local window = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], window + 1000)
return {redis.call('ZCARD', KEYS[1]), added}
`)

// add records n under a member unique to this call, scored with the
// server's time, drops what is older than the window, and returns the sum.
var add = redis.NewScript(`
local window = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, t[1] .. t[2] .. ':' .. ARGV[3] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], window + 1000)
local sum = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  sum = sum + tonumber(string.match(m, ':(%d+)$'))
end
return sum
`)

// Take implements Counters.
func (r *Redis) Take(ctx context.Context, key string, rate float64, burst int) (bool, time.Duration, error) {
	v, err := take.Run(ctx, r.c, []string{r.prefix + "bucket:" + key}, rate, burst).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("abuse: redis: %w", err)
	}
	if len(v) != 2 {
		return false, 0, fmt.Errorf("abuse: redis: unexpected reply")
	}
	return v[0] == 1, time.Duration(v[1]) * time.Millisecond, nil
}

// Touch implements Counters.
func (r *Redis) Touch(ctx context.Context, key string, members []string, window time.Duration) (int, int, error) {
	args := make([]any, 0, len(members)+1)
	args = append(args, window.Milliseconds())
	for _, m := range members {
		args = append(args, m)
	}
	v, err := touch.Run(ctx, r.c, []string{r.prefix + "window:" + key}, args...).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("abuse: redis: %w", err)
	}
	if len(v) != 2 {
		return 0, 0, fmt.Errorf("abuse: redis: unexpected reply")
	}
	return int(v[0]), int(v[1]), nil
}

// Add implements Counters.
func (r *Redis) Add(ctx context.Context, key string, n int, window time.Duration) (int, error) {
	sum, err := add.Run(ctx, r.c, []string{r.prefix + "amounts:" + key}, window.Milliseconds(), n, randomTag()).Int()
	if err != nil {
		return 0, fmt.Errorf("abuse: redis: %w", err)
	}
	return sum, nil
}

func randomTag() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Forget implements Counters.
func (r *Redis) Forget(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, r.prefix+"window:"+key, r.prefix+"amounts:"+key).Err(); err != nil {
		return fmt.Errorf("abuse: redis: %w", err)
	}
	return nil
}

// Ping reports whether the server answers.
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close implements Counters.
func (r *Redis) Close() error { return r.c.Close() }
