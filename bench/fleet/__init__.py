"""Fleet scale: one version rolled out to 1k, 10k and 100k devices by the real cloud code,
and to 1M in a discrete-event model fed with the costs measured at 10k.

The real part runs what the cloud functions run, against moto's server over
HTTP, with the production Registry, FleetTable, RecordedIdentity (the identity
kept in the device's fleet item, in front of ThingRegistryIdentity),
IotDataPublisher and the TUF repository in the run's bucket, signed with the KMS
key (the rollout's pointer, and the files each nudge carries):

- per status message, functions.status.logic.record_status, then
  Rollouts.evaluate when the outcome counted: in the stack the status function
  only counts and the registry's stream invokes the schedule function for that
  evaluation, in batches; here it runs right after the count and is billed with
  the status message (one Lambda invocation where the stack has up to one more
  per stream batch, and one evaluation per counted outcome where a batch has one
  per model);
- every minute, Rollouts.ensure_announced + Rollouts.evaluate (the schedule);
- the release of v1 and v2 into the repository, then Rollouts.start for v2 (what
  the retrain does last).

Devices are plain function calls in simulated time. Every device is enrolled in
the thing registry (IoT CreateThing, 10 of them in the canary thing group) and
sends its first heartbeat (which pays the identity lookup); then v2 is rolled out
through the default stages (named canaries, 1%, 10%, 50%, 100%). A device hears
of v2 when a publish reaches its band (or its own topic), installs after a time
drawn from `DEVICE_MODEL`, and reports its outcome. A device that was offline
sends a heartbeat when it reconnects, as the agent does on every connect.

Every AWS request is counted by a botocore hook, per report and by what the
report turned out to be (counted, moved the rollout, duplicate, not counted,
heartbeat). DynamoDB capacity is computed from the item sizes found at the end
of the run and DynamoDB's rules (moto reports none). One device of the last
stage updates for real (edge.trust's SignedRepository, python-tuf over the
agent's fetcher) through the CDN stand-in in front of the bucket, with what the
nudge that reached it carried: its CDN requests and bytes are one update's, and
those CloudFront must pass to S3 every time (the no-cache timestamp) are S3 GETs. A
function's billed duration is its CPU time plus each request at SERVICE_MS.
`PRICES` is the price table, with its sources.

Once the rollout is complete no report can change it, so the reports left (the
devices that were offline, reconnecting over a day) are handled by several
threads, each device's own reports in order; before that, one at a time in
simulated-time order.

    python -m bench.run fleet                         # 1k, 10k, 100k + the 1M model, README
    python -m bench.fleet --sizes 1000 10000          # some sizes, printed
    python -m bench.fleet --sizes 1000 10000 --reuse earlier.json --save
                                  # run two sizes again, keep the others; results, README
    python -m bench.fleet --sizes --reuse bench/results/fleet.json
                                  # no size run again: the kept runs costed anew, printed

The modules, one concern each: settings (sizes, assumptions, report types), prices,
metering (the request hook, the simulated clock, reports by type), capacity (DynamoDB
units from item sizes), devices (the draws and their reports), simulation (the 1M
model), moto_server and moto_run (the real run), observed (the device updated for
real), costs (the bill), at_rest (a device-day at rest in the presence design, from
stated parameters), results (the whole benchmark) and cli.
"""

from bench.fleet.results import measure

__all__ = ["measure"]
