"""Messages between a server worker and its engine process.

Pickle carries the structure; array data never goes through the pickle stream.
Arrays travel as raw out-of-band buffers (pickle protocol 5), written straight
from the array's memory, and arrays made with ``shared_array`` do not travel at
all: only a file descriptor of their memory crosses, and the engine maps the
same pages. A 3-hour clip (690 MB of float32) is then in memory once, not once
per process.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import weakref
from multiprocessing.reduction import recv_handle, send_handle

import numpy as np

_MEMFD = hasattr(os, "memfd_create")


class _Memory(mmap.mmap):
    """A memfd's mapping, knowing its descriptor and address. Arrays over it have it
    as their ``base`` (views too), so the pickler can tell a shared array from an
    array that merely came out of one (``np.tile`` of a shared array owns new memory)."""

    fd: int
    address: int


def shared_array(shape, dtype=np.float32) -> np.ndarray:
    """An empty array another process can map; a plain array where memfds do not exist."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not _MEMFD or nbytes == 0:
        return np.empty(shape, dtype)
    fd = os.memfd_create("gpu-audio", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)
        memory = _Memory(fd, nbytes)
    except OSError:
        os.close(fd)
        raise
    memory.fd = fd
    memory.address = np.frombuffer(memory, np.uint8).__array_interface__["data"][0]
    weakref.finalize(memory, os.close, fd)  # when the last array over it is gone
    return np.ndarray(shape, dtype, buffer=memory)


def shared_memory_of(array: np.ndarray):
    """The ``_Memory`` an array's data lives in, or None."""
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, _Memory) else None


def to_shared(array: np.ndarray) -> np.ndarray:
    """``array`` in shared memory: itself if it is, else a copy (drop the original)."""
    if shared_memory_of(array) is not None:
        return array
    out = shared_array(array.shape, array.dtype)
    out[...] = array
    return out


class _Pickler(pickle.Pickler):
    def __init__(self, file, fds: list[int], buffers: list):
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self.fds = fds

    def persistent_id(self, obj):
        if type(obj) is not np.ndarray:
            return None
        memory = shared_memory_of(obj)
        if memory is None:
            return None
        if memory.fd not in self.fds:
            self.fds.append(memory.fd)
        offset = obj.__array_interface__["data"][0] - memory.address
        return ("shm", self.fds.index(memory.fd), offset, obj.shape, obj.dtype.str, obj.strides)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, maps: list, buffers: list):
        super().__init__(file, buffers=buffers)
        self.maps = maps

    def persistent_load(self, pid):
        _, index, offset, shape, dtype, strides = pid
        # Private copy-on-write mapping: the engine may scribble on its input
        # without the worker seeing it.
        return np.ndarray(shape, np.dtype(dtype), buffer=self.maps[index], offset=offset, strides=strides)


def send(conn, obj) -> None:
    """Write ``obj`` to ``conn`` (a multiprocessing Connection over a Unix socket)."""
    fds: list[int] = []
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, fds, buffers).dump(obj)
    raws = [b.raw() for b in buffers]
    conn.send(([r.nbytes for r in raws], len(fds)))
    conn.send_bytes(stream.getbuffer())
    for raw in raws:  # sizes are known to both ends: raw bytes, no framing, no copies
        view = raw.cast("B")
        while view:
            view = view[os.write(conn.fileno(), view) :]
    for fd in fds:
        send_handle(conn, fd, None)


def recv(conn):
    """Read what ``send`` wrote; raises EOFError when the other end is gone."""
    sizes, fd_count = conn.recv()
    header = conn.recv_bytes()
    buffers = []
    for size in sizes:
        buffer = bytearray(size)  # read straight into it (recv_bytes would copy twice)
        view = memoryview(buffer)
        while view:
            count = os.readv(conn.fileno(), [view])
            if count == 0:
                raise EOFError("the other end hung up in the middle of a message")
            view = view[count:]
        buffers.append(buffer)
    maps = []
    for _ in range(fd_count):
        fd = recv_handle(conn)
        try:
            maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE))
        finally:
            os.close(fd)  # the mapping holds the memory
    return _Unpickler(io.BytesIO(header), maps, buffers).load()
