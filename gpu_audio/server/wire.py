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

import numpy as np
from multiprocessing.reduction import recv_handle, send_handle

_MEMFD = hasattr(os, "memfd_create")


class SharedArray(np.ndarray):
    """An ndarray in anonymous shared memory (a memfd). Views keep the memory alive
    through ``base``, and carry the descriptor and where they start in it."""

    _fd: int | None = None
    _origin: int = 0  # address of the mapping's first byte

    def __array_finalize__(self, obj):
        if obj is not None:
            self._fd = getattr(obj, "_fd", None)
            self._origin = getattr(obj, "_origin", 0)


def shared_array(shape, dtype=np.float32) -> np.ndarray:
    """An empty array another process can map; a plain array where memfds do not exist."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not _MEMFD or nbytes == 0:
        return np.empty(shape, dtype)
    fd = os.memfd_create("gpu-audio", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)
        memory = mmap.mmap(fd, nbytes)
    except OSError:
        os.close(fd)
        raise
    array = SharedArray(shape, dtype, buffer=memory)
    array._fd = fd
    array._origin = array.__array_interface__["data"][0]
    weakref.finalize(array, os.close, fd)
    return array


def to_shared(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` in shared memory (the caller drops the original)."""
    if isinstance(array, SharedArray) and array._fd is not None:
        return array
    out = shared_array(array.shape, array.dtype)
    out[...] = array
    return out


class _Pickler(pickle.Pickler):
    def __init__(self, file, fds: list[int], buffers: list):
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self.fds = fds

    def persistent_id(self, obj):
        if type(obj) is SharedArray and obj._fd is not None:
            if obj._fd not in self.fds:
                self.fds.append(obj._fd)
            offset = obj.__array_interface__["data"][0] - obj._origin
            return ("shm", self.fds.index(obj._fd), offset, obj.shape, obj.dtype.str, obj.strides)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, maps: list, buffers: list):
        super().__init__(file, buffers=buffers)
        self.maps = maps

    def persistent_load(self, pid):
        _, index, offset, shape, dtype, strides = pid
        # Private copy-on-write mapping: the engine may scribble on its input
        # without the worker seeing it.
        return np.ndarray(shape, np.dtype(dtype), buffer=self.maps[index], offset=offset,
                          strides=strides)


def send(conn, obj) -> None:
    """Write ``obj`` to ``conn`` (a multiprocessing Connection over a Unix socket)."""
    fds: list[int] = []
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, fds, buffers).dump(obj)
    raws = [b.raw() for b in buffers]
    conn.send(([r.nbytes for r in raws], len(fds)))
    conn.send_bytes(stream.getbuffer())
    for raw in raws:
        conn.send_bytes(raw)
    for fd in fds:
        send_handle(conn, fd, None)


def recv(conn):
    """Read what ``send`` wrote; raises EOFError when the other end is gone."""
    sizes, fd_count = conn.recv()
    header = conn.recv_bytes()
    buffers = []
    for size in sizes:
        buffer = bytearray(size)  # writable, unlike recv_bytes()'s bytes
        if size:
            conn.recv_bytes_into(buffer)
        else:
            conn.recv_bytes()
        buffers.append(buffer)
    maps = []
    for _ in range(fd_count):
        fd = recv_handle(conn)
        try:
            maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE))
        finally:
            os.close(fd)  # the mapping holds the memory
    return _Unpickler(io.BytesIO(header), maps, buffers).load()
