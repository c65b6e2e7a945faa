using System.Buffers;
using System.Runtime.CompilerServices;

namespace RetriKT.MLNet.Common;

/// <summary>
/// The scratch arrays of one forward pass, rented from <see cref="ArrayPool{T}.Shared"/> and returned together by
/// <see cref="Return"/>: a served encoder call allocated them anew every time (a long sequence's [t, 4h] and [t, t]
/// buffers are large-object-heap arrays, reclaimed only by gen-2 collections), while concurrent calls still each get
/// their own. A rented array can be longer than asked and holds stale values: callers pass explicit lengths (sliced
/// spans, not whole arrays) and write every element before reading it.
/// </summary>
/// <remarks>
/// A mutable struct: keep it in a plain local (not a <c>using</c> declaration, whose copy would lose the rentals),
/// pass it by <c>ref</c>, and call <see cref="Return"/> in a <c>finally</c>.
/// </remarks>
internal struct RentedFloats
{
    private const int Capacity = 12;

    [InlineArray(Capacity)]
    private struct Slots
    {
        private float[]? _first;
    }

    private Slots _slots;
    private int _count;

    /// <summary>An array of at least <paramref name="length"/> floats, owned until <see cref="Return"/>.</summary>
    public float[] Rent(int length)
    {
        if (_count == Capacity) throw new InvalidOperationException($"RentedFloats holds at most {Capacity} arrays.");
        var array = ArrayPool<float>.Shared.Rent(length);
        _slots[_count++] = array;
        return array;
    }

    /// <summary>Gives every rented array back to the pool (also after a failed pass).</summary>
    public void Return()
    {
        for (int i = 0; i < _count; i++)
        {
            ArrayPool<float>.Shared.Return(_slots[i]!);
            _slots[i] = null;
        }
        _count = 0;
    }
}
