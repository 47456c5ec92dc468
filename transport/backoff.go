package transport

import (
	"math/rand/v2"
	"time"

	circuit "github.com/lni/goutils/netutil/rubyist/circuitbreaker"
)

// jitterBackoff is an exponential backoff with ±50% jitter drawn from an
// injected source: the interval doubles from min up to max, and each wait
// is uniform in [interval/2, interval*3/2) so that nodes restarted together
// do not redial in lockstep. It implements the breaker's backoff policy
// (github.com/lni/goutils/netutil/cenk/backoff.BackOff) and remembers the
// last wait it gave, which is the breaker's current one: the peer loop
// sleeps exactly that long instead of polling the breaker.
//
// Not safe for concurrent use; each peer loop owns its own.
type jitterBackoff struct {
	min, max time.Duration
	interval time.Duration
	last     time.Duration
	rnd      *rand.Rand
}

// newJitterBackoff returns a backoff from min to max whose jitter is drawn
// from a source seeded with the two seeds.
func newJitterBackoff(min, max time.Duration, seed1, seed2 uint64) *jitterBackoff {
	return &jitterBackoff{min: min, max: max, interval: min, rnd: rand.New(rand.NewPCG(seed1, seed2))}
}

// NextBackOff returns the next wait and doubles the interval.
func (b *jitterBackoff) NextBackOff() time.Duration {
	iv := b.interval
	b.interval = min(2*b.interval, b.max)
	b.last = iv/2 + time.Duration(b.rnd.Int64N(int64(iv)+1))
	return b.last
}

// Reset goes back to the minimum interval.
func (b *jitterBackoff) Reset() { b.interval = b.min }

// newBreaker returns a peer's circuit breaker: it trips on the first failed
// connection and lets one attempt through per backoff wait until one
// succeeds. Subscribe must not be used: it starts a goroutine nobody stops.
func newBreaker(b *jitterBackoff) *circuit.Breaker {
	return circuit.NewBreakerWithOptions(&circuit.Options{
		BackOff:    b,
		ShouldTrip: circuit.ConsecutiveTripFunc(1),
	})
}
