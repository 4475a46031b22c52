"""The analytic tier: a closed-form steady-state estimate of a run's summary.

`estimate(spec)` returns the figures `summarize` gives for an event run of the same
description (per-user speed, aggregate throughput, TTFT, TPOT, queueing, the run's
length), plus `fidelity: "analytic"` and `bound`, what limits per-user speed. It prices
nothing itself: pipelines are planned by the builder's planners, each stage is built as
the event model builds it and asked what a pass costs on each of its regions (a GPU
stage, a step), links cost `LinkSpec.serialization_ps` plus their latency, the network
`network_latency_ps`. Planning and pass costs are cached per distinct pipeline
(`costs`), so a sweep pays milliseconds a point.

The model, per replica (what the event model does, read as queueing):
- A replica's pipeline is a cycle of fixed-service FIFO servers (every region of every
  stage, every link's wire) and delays (link latencies). A decode step's token loop L
  is its service everywhere plus the delays; a prompt's chunks, sent at once, reach the
  first token after its train time P (Lindley's recursion through the empty chain).
- Where requests go (`flows`): the users' nearest router, or the one named; round-robin
  spreads a model's requests evenly over its replicas, least-outstanding (and
  most-free-KV, session affinity) in inverse proportion to the time each keeps them out
  (the network both ways and its time in service, Little's law), nearest-site fills the
  closest replicas up to their KV cache first. TTFT adds the network both ways.
- Requests in flight N: closed-loop users by their cycle (network, time at the replica,
  think), open loop by Little's law (rate x time at the replica); the KV cache (every
  stage's SRAM beside the weights, and `max_active`) admits at most so many, the rest
  wait at the router: closed loop, the cycle's excess; open loop below capacity, an
  M/D/c wait (Erlang C halved, Allen-Cunneen), above it a backlog that grows all run.
- Time per token (`steady`): free of prompts, max(L, n x D) (a closed cycle of
  fixed-service servers runs at its slowest circuit: the loop, or all n decoding steps
  through the busiest server D; harmonic mean over the binomial or Poisson n); then
  prompts crossing ahead: in a FIFO chain a fast pass sent behind a slow one leaves with
  it, so a decode step sent less than P after a prompt is held until the prompt is out.
  The steps form a two-state chain (free, held): after a step of time w the next is held
  if a prompt came within w (Poisson: 1 - exp(-X w); gamma gaps for the regular streams a
  router deals out), and then takes P minus the latest prompt's age. The same holds a
  co-located model's step behind the slower model's steps, and a prompt behind a slower
  prompt (its TTFT). Mean value analysis with exponential service was tried on paper
  and set aside: with 80 alike regions of fixed service it predicts queueing a FIFO chain
  of fixed service never has (twice the loop at the knee).
- Waves (`waves`): bursts at t=0, closed-loop users who never think, and backlogs far
  beyond what a replica holds reach it together and stay in step: a wave's prompts as
  one train, then max(L, n x D) per token, wave after wave. A closed loop's first round
  is such a wave too (everyone sends at t=0).
- GPU replicas batch every pass waiting: a token's time is one step over all decoding
  requests and the prompts that arrived during the last one (`GpuStepCost.step`).

Assumptions beyond the event model's: requests of a population have its mean lengths (a
request file's rows are averaged per site and model); decode steps cost what a step at
the request's mean context costs; arrivals that are not bursts are stationary. What the
steady state cannot see: ramp-up and drain beyond the terms above (a short run), users
whose think time is short against their response (their requests stay partly in step,
which the steady state treats as random: slower than the event model), replicas a
router's policy loads unevenly for reasons other than distance, and co-located models,
whose faster passes the slower ones hold more than the two-state chain says (the 8B beside
a 70B: its time per token 25-30% short of the event model's). `wafersim validate
--analytic` prints the error on a grid of points.
"""

from cluster.analytic.estimator import estimate

__all__ = ["estimate"]
