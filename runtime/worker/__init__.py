"""The worker side: the broker, its consumer, Ferry's middleware, running an attempt.

- `broker`: builds the broker (in-process or Redis), fixes the middleware order,
  declares one actor per function;
- `redis_broker`: the waking Redis consumer (blocks on a wake-up list instead of polling);
- `queues`: what waits in each broker queue;
- `middleware/`: the claim, log binding and attempt metrics, one file each;
- `execution`: the unit of work of one attempt, and how its failure is recorded;
- `time_limit`: the function's timeout around the handler alone, never its recording;
- `consumer`: starting a process's worker threads with its sweep and heartbeat;
- `process`: the `ferry worker` process (signals, graceful drain).
"""
