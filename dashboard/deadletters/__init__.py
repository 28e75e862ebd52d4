"""Dead letters on the brokers themselves: find the dead-letter queues of every
broker Eventscope polls, peek at their messages without consuming them, and
redrive them (all, or the ones picked) back to where they came from as a job
of the worker."""
