# The value checks' fast path (qconvert/validate/values.py, whose *_ref functions are the spec):
# the largest magnitude in a chunk of float32 values, as bits, optionally measured while bfloat16
# values are widened to float32 so that it costs no pass of its own over the chunk.
#
# For IEEE floats with the sign bit cleared, integer order is magnitude order, and every NaN
# (0x7F800001..0x7FFFFFFF) sorts above +Inf (0x7F800000) above every finite value. So an integer
# max over `bits & 0x7FFFFFFF` says whether a chunk holds a NaN, an Inf or a value beyond a
# limit, with no float comparison (which NaN would defeat). Signed int32 arithmetic (the masked
# values are < 2^31) so that gcc vectorizes the max with SSE2's pcmpgtd; several running maxima,
# so that no one dependency chain holds the loop up.

from libc.stdint cimport int32_t, uint16_t, uint32_t

cdef enum:
    LANES = 16


cdef int32_t _max_magnitude(const uint32_t* bits, Py_ssize_t n) noexcept nogil:
    cdef int32_t m[LANES]
    cdef int32_t b, best = 0
    cdef Py_ssize_t i = 0, j, whole = n - n % LANES
    for j in range(LANES):
        m[j] = 0
    while i < whole:
        for j in range(LANES):
            b = <int32_t>(bits[i + j] & 0x7FFFFFFF)
            m[j] = b if b > m[j] else m[j]
        i += LANES
    for i in range(whole, n):
        b = <int32_t>(bits[i] & 0x7FFFFFFF)
        best = b if b > best else best
    for j in range(LANES):
        best = m[j] if m[j] > best else best
    return best


cdef int32_t _widen_bf16(const uint16_t* raw, uint32_t* out, Py_ssize_t n) noexcept nogil:
    cdef int32_t m[LANES]
    cdef int32_t b, best = 0
    cdef uint32_t u
    cdef Py_ssize_t i = 0, j, whole = n - n % LANES
    for j in range(LANES):
        m[j] = 0
    while i < whole:
        for j in range(LANES):
            u = (<uint32_t>raw[i + j]) << 16
            out[i + j] = u
            b = <int32_t>(u & 0x7FFFFFFF)
            m[j] = b if b > m[j] else m[j]
        i += LANES
    for i in range(whole, n):
        u = (<uint32_t>raw[i]) << 16
        out[i] = u
        b = <int32_t>(u & 0x7FFFFFFF)
        best = b if b > best else best
    for j in range(LANES):
        best = m[j] if m[j] > best else best
    return best


def max_magnitude_bits(const uint32_t[::1] bits) -> int:
    """The largest `bits[i] & 0x7FFFFFFF` (0 for an empty array): the float32 bits of the
    largest magnitude in the array the bits are a view of, NaN above Inf above the rest."""
    cdef int32_t m = 0
    cdef Py_ssize_t n = bits.shape[0]
    if n:
        with nogil:
            m = _max_magnitude(&bits[0], n)
    return m


def widen_bf16(const uint16_t[::1] raw, uint32_t[::1] out) -> int:
    """out[i] = raw[i] << 16 (bfloat16 to float32 bits, exact) for every raw value; returns
    max_magnitude_bits of what was written."""
    cdef int32_t m = 0
    cdef Py_ssize_t n = raw.shape[0]
    if out.shape[0] < n:
        raise ValueError(f"widen_bf16: out holds {out.shape[0]} values, raw {n}")
    if n:
        with nogil:
            m = _widen_bf16(&raw[0], &out[0], n)
    return m
