//! kvq: a key-value service whose writes go through a Redis-backed task queue.
