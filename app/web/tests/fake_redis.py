"""A small in-memory stand-in for redis-py's client: the list and hash commands the
example worker and web app use, with Redis's semantics (bytes out, LPUSH at the left,
BLMOVE returning None when the list stays empty)."""

from __future__ import annotations


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class FakeRedis:
    def __init__(self):
        self.lists: dict[str, list[bytes]] = {}
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.pings = 0
        # Called by blmove when the queue is empty (a test's "time passes" hook).
        self.on_empty_wait = None

    def ping(self):
        self.pings += 1
        return True

    def lpush(self, key, *values):
        items = self.lists.setdefault(key, [])
        for value in values:
            items.insert(0, _bytes(value))
        return len(items)

    def rpush(self, key, *values):
        items = self.lists.setdefault(key, [])
        items.extend(_bytes(value) for value in values)
        return len(items)

    def lrange(self, key, start, end):
        items = self.lists.get(key, [])
        return items[start:] if end == -1 else items[start : end + 1]

    def llen(self, key):
        return len(self.lists.get(key, []))

    def lrem(self, key, count, value):
        items = self.lists.get(key, [])
        removed = 0
        for index, item in enumerate(list(items)):
            if item == _bytes(value) and (count == 0 or removed < count):
                items.pop(index - removed)
                removed += 1
        return removed

    def lmove(self, source, destination, src="LEFT", dest="RIGHT"):
        items = self.lists.get(source, [])
        if not items:
            return None
        value = items.pop(0 if src == "LEFT" else -1)
        target = self.lists.setdefault(destination, [])
        target.insert(0, value) if dest == "LEFT" else target.append(value)
        return value

    def blmove(self, first_list, second_list, timeout, src="LEFT", dest="RIGHT"):
        if not self.lists.get(first_list) and self.on_empty_wait:
            self.on_empty_wait()
        return self.lmove(first_list, second_list, src, dest)

    def hset(self, key, field, value):
        self.hashes.setdefault(key, {})[str(field)] = _bytes(value)
        return 1

    def hget(self, key, field):
        return self.hashes.get(key, {}).get(str(field))

    def hgetall(self, key):
        return {k.encode(): v for k, v in self.hashes.get(key, {}).items()}

    def pipeline(self, transaction=True):
        return FakePipeline(self)


class FakePipeline:
    """Queues calls and runs them at execute(), as redis-py's MULTI/EXEC pipeline does."""

    def __init__(self, client: FakeRedis):
        self.client = client
        self.calls = []

    def __getattr__(self, name):
        def queued(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return queued

    def execute(self):
        results = [getattr(self.client, name)(*a, **k) for name, a, k in self.calls]
        self.calls = []
        return results
