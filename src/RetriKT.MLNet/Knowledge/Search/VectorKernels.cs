using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Inner-product kernels of the managed search path. A single-query scan is memory-bound (0.5 FLOP per byte), so the
/// kernel's job is to keep the load ports busy: four rows at a time, two accumulators per row (eight independent FMA
/// chains), widest vectors the CPU accelerates (AVX-512, else AVX2/NEON 256/128-bit), scalar tail for odd dimensions.
/// </summary>
internal static class VectorKernels
{
    /// <summary>Inner products of <paramref name="query"/> with <paramref name="rowCount"/> rows of width <paramref name="query"/>.Length starting at <paramref name="rows"/>.</summary>
    public static void Scores(ReadOnlySpan<float> query, ReadOnlySpan<float> rows, int rowCount, Span<float> scores)
        => Scores(query, rows, rowCount, scores, WidthBits);

    /// <summary>The widest vectors the CPU accelerates, in bits (512, 256, else 0: scalar), as the kernels use them.</summary>
    private static int WidthBits => Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 0;

    /// <summary>
    /// <see cref="Scores(ReadOnlySpan{float}, ReadOnlySpan{float}, int, Span{float})"/> on the paths of a CPU whose widest
    /// accelerated vectors are <paramref name="widthBits"/> (tests run a narrower CPU's path here).
    /// </summary>
    internal static void Scores(ReadOnlySpan<float> query, ReadOnlySpan<float> rows, int rowCount, Span<float> scores, int widthBits)
    {
        int d = query.Length;
        if ((long)rowCount * d > rows.Length || scores.Length < rowCount) throw new ArgumentException("row block out of range");
        ref float q = ref MemoryMarshal.GetReference(query);
        ref float r = ref MemoryMarshal.GetReference(rows);
        ref float s = ref MemoryMarshal.GetReference(scores);
        int i = 0;
        if (widthBits >= 512 && d >= 16) i = Scores512(ref q, ref r, d, rowCount, ref s);
        else if (widthBits >= 256 && d >= 8) i = Scores256(ref q, ref r, d, rowCount, ref s);
        for (; i < rowCount; i++) Unsafe.Add(ref s, i) = Dot(ref q, ref Unsafe.Add(ref r, (nint)i * d), d, widthBits);
    }

    /// <summary>
    /// Scales <paramref name="v"/> to unit length and returns its norm; leaves it unchanged when the norm is 0 or not
    /// finite (the caller refuses such a vector). The squares are summed in double: in float they underflow for values
    /// near 1e-22 (a norm too small by 9 %, "cosines" of 1.09) and overflow for values near 1e19 (a finite vector of norm ∞).
    /// </summary>
    public static double ScaleToUnitLength(Span<float> v)
    {
        double sum = 0;
        foreach (var x in v) sum += (double)x * x;
        double norm = Math.Sqrt(sum);
        if (!(norm > 0) || !double.IsFinite(norm)) return norm;
        float inverse = (float)(1 / norm);
        if (float.IsFinite(inverse))
            for (int i = 0; i < v.Length; i++) v[i] *= inverse;
        else // a norm below 1 / float.MaxValue: dividing in double keeps the values finite
            for (int i = 0; i < v.Length; i++) v[i] = (float)(v[i] / norm);
        return norm;
    }

    /// <summary>Inner product of two vectors of equal length.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
        => Dot(ref MemoryMarshal.GetReference(a), ref MemoryMarshal.GetReference(b), a.Length, WidthBits);

    /// <summary><see cref="Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/> on the path of a CPU whose widest accelerated vectors are <paramref name="widthBits"/>.</summary>
    internal static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int widthBits)
        => Dot(ref MemoryMarshal.GetReference(a), ref MemoryMarshal.GetReference(b), a.Length, widthBits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(ref float a, ref float b, int d, int widthBits)
    {
        int j = 0;
        float sum = 0;
        if (widthBits >= 512 && d >= 16)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            for (; j + 32 <= d; j += 32)
            {
                acc0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref a, (nuint)j), Vector512.LoadUnsafe(ref b, (nuint)j), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref a, (nuint)(j + 16)), Vector512.LoadUnsafe(ref b, (nuint)(j + 16)), acc1);
            }
            for (; j + 16 <= d; j += 16)
                acc0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref a, (nuint)j), Vector512.LoadUnsafe(ref b, (nuint)j), acc0);
            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (widthBits >= 256 && d >= 8)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; j + 16 <= d; j += 16)
            {
                acc0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref a, (nuint)j), Vector256.LoadUnsafe(ref b, (nuint)j), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref a, (nuint)(j + 8)), Vector256.LoadUnsafe(ref b, (nuint)(j + 8)), acc1);
            }
            for (; j + 8 <= d; j += 8)
                acc0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref a, (nuint)j), Vector256.LoadUnsafe(ref b, (nuint)j), acc0);
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; j < d; j++) sum = MathF.FusedMultiplyAdd(Unsafe.Add(ref a, j), Unsafe.Add(ref b, j), sum);
        return sum;
    }

    private static int Scores512(ref float q, ref float rows, int d, int rowCount, ref float scores)
    {
        int vectorEnd = d & ~15, i = 0;
        for (; i + 4 <= rowCount; i += 4)
        {
            ref float r0 = ref Unsafe.Add(ref rows, (nint)i * d);
            ref float r1 = ref Unsafe.Add(ref r0, d);
            ref float r2 = ref Unsafe.Add(ref r1, d);
            ref float r3 = ref Unsafe.Add(ref r2, d);
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
            int j = 0;
            for (; j + 32 <= vectorEnd; j += 32)
            {
                var qa = Vector512.LoadUnsafe(ref q, (nuint)j);
                var qb = Vector512.LoadUnsafe(ref q, (nuint)(j + 16));
                a0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r0, (nuint)j), qa, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r1, (nuint)j), qa, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r2, (nuint)j), qa, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r3, (nuint)j), qa, a3);
                b0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r0, (nuint)(j + 16)), qb, b0);
                b1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r1, (nuint)(j + 16)), qb, b1);
                b2 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r2, (nuint)(j + 16)), qb, b2);
                b3 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r3, (nuint)(j + 16)), qb, b3);
            }
            if (j < vectorEnd)
            {
                var qa = Vector512.LoadUnsafe(ref q, (nuint)j);
                a0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r0, (nuint)j), qa, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r1, (nuint)j), qa, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r2, (nuint)j), qa, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref r3, (nuint)j), qa, a3);
            }
            float s0 = Vector512.Sum(a0 + b0), s1 = Vector512.Sum(a1 + b1), s2 = Vector512.Sum(a2 + b2), s3 = Vector512.Sum(a3 + b3);
            for (int t = vectorEnd; t < d; t++)
            {
                float qt = Unsafe.Add(ref q, t);
                s0 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r0, t), qt, s0);
                s1 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r1, t), qt, s1);
                s2 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r2, t), qt, s2);
                s3 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r3, t), qt, s3);
            }
            Unsafe.Add(ref scores, i) = s0;
            Unsafe.Add(ref scores, i + 1) = s1;
            Unsafe.Add(ref scores, i + 2) = s2;
            Unsafe.Add(ref scores, i + 3) = s3;
        }
        return i;
    }

    private static int Scores256(ref float q, ref float rows, int d, int rowCount, ref float scores)
    {
        int vectorEnd = d & ~7, i = 0;
        for (; i + 4 <= rowCount; i += 4)
        {
            ref float r0 = ref Unsafe.Add(ref rows, (nint)i * d);
            ref float r1 = ref Unsafe.Add(ref r0, d);
            ref float r2 = ref Unsafe.Add(ref r1, d);
            ref float r3 = ref Unsafe.Add(ref r2, d);
            // Two accumulators per row (even and odd 8-float chunks), summed as Dot sums them, so a row scores the same
            // here as in the tail or in HNSW: with one accumulator, two copies of a vector scored differently by position.
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
            int j = 0;
            for (; j + 16 <= vectorEnd; j += 16)
            {
                var qa = Vector256.LoadUnsafe(ref q, (nuint)j);
                var qb = Vector256.LoadUnsafe(ref q, (nuint)(j + 8));
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r0, (nuint)j), qa, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r1, (nuint)j), qa, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r2, (nuint)j), qa, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r3, (nuint)j), qa, a3);
                b0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r0, (nuint)(j + 8)), qb, b0);
                b1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r1, (nuint)(j + 8)), qb, b1);
                b2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r2, (nuint)(j + 8)), qb, b2);
                b3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r3, (nuint)(j + 8)), qb, b3);
            }
            if (j < vectorEnd)
            {
                var qa = Vector256.LoadUnsafe(ref q, (nuint)j);
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r0, (nuint)j), qa, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r1, (nuint)j), qa, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r2, (nuint)j), qa, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref r3, (nuint)j), qa, a3);
            }
            float s0 = Vector256.Sum(a0 + b0), s1 = Vector256.Sum(a1 + b1), s2 = Vector256.Sum(a2 + b2), s3 = Vector256.Sum(a3 + b3);
            for (int t = vectorEnd; t < d; t++)
            {
                float qt = Unsafe.Add(ref q, t);
                s0 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r0, t), qt, s0);
                s1 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r1, t), qt, s1);
                s2 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r2, t), qt, s2);
                s3 = MathF.FusedMultiplyAdd(Unsafe.Add(ref r3, t), qt, s3);
            }
            Unsafe.Add(ref scores, i) = s0;
            Unsafe.Add(ref scores, i + 1) = s1;
            Unsafe.Add(ref scores, i + 2) = s2;
            Unsafe.Add(ref scores, i + 3) = s3;
        }
        return i;
    }

    /// <summary>
    /// Offers <paramref name="scores"/> (ids <paramref name="firstId"/>…) to <paramref name="top"/>. Ids arrive in
    /// increasing order, so a score equal to the current k-th is never better (ties keep the lower id): only strictly
    /// greater scores are offered, and whole vectors below the threshold are skipped with one compare.
    /// </summary>
    public static void Select(ReadOnlySpan<float> scores, int firstId, ref TopK top)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref float s = ref MemoryMarshal.GetReference(scores);
            for (; i + 16 <= scores.Length; i += 16)
            {
                var mask = Vector512.GreaterThan(Vector512.LoadUnsafe(ref s, (nuint)i), Vector512.Create(top.Threshold)).ExtractMostSignificantBits();
                while (mask != 0)
                {
                    int lane = System.Numerics.BitOperations.TrailingZeroCount(mask);
                    mask &= mask - 1;
                    float value = scores[i + lane];
                    if (value > top.Threshold) top.Offer(value, firstId + i + lane);
                }
            }
        }
        for (; i < scores.Length; i++)
            if (scores[i] > top.Threshold) top.Offer(scores[i], firstId + i);
    }
}

/// <summary>
/// A bounded min-heap keeping the k best (score, id) pairs; "better" = higher score, then lower id. Works on caller
/// buffers so the search hot path allocates nothing.
/// </summary>
internal ref struct TopK
{
    private readonly Span<float> _scores;
    private readonly Span<int> _ids;
    private readonly int _k;
    private int _count;

    public TopK(Span<float> scores, Span<int> ids, int k)
    {
        _scores = scores[..k];
        _ids = ids[..k];
        _k = k;
        _count = 0;
        Threshold = float.NegativeInfinity;
    }

    /// <summary>Continues a selection whose first <paramref name="count"/> slots already hold a heap.</summary>
    public static TopK Resume(Span<float> scores, Span<int> ids, int k, int count)
    {
        var top = new TopK(scores, ids, k) { _count = count };
        if (count == k) top.Threshold = scores[0];
        return top;
    }

    /// <summary>Scores must exceed this to enter (−∞ until the heap is full).</summary>
    public float Threshold { get; private set; }

    public readonly int Count => _count;

    /// <summary>Adds (score, id) if it beats the current worst kept pair.</summary>
    public void Offer(float score, int id)
    {
        if (_count < _k)
        {
            int c = _count++;
            _scores[c] = score;
            _ids[c] = id;
            SiftUp(c);
            if (_count == _k) Threshold = _scores[0];
            return;
        }
        if (!Better(score, id, _scores[0], _ids[0])) return;
        _scores[0] = score;
        _ids[0] = id;
        SiftDown(0);
        Threshold = _scores[0];
    }

    /// <summary>Sorts the kept pairs best first (in place) and returns how many there are.</summary>
    public int SortDescending()
    {
        // Heap-sort: repeatedly move the worst (the root) to the end.
        int n = _count;
        for (int end = n - 1; end > 0; end--)
        {
            (_scores[0], _scores[end]) = (_scores[end], _scores[0]);
            (_ids[0], _ids[end]) = (_ids[end], _ids[0]);
            _count = end;
            SiftDown(0);
        }
        _count = n;
        Threshold = float.NegativeInfinity;
        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Better(float score, int id, float otherScore, int otherId)
        => score > otherScore || (score == otherScore && id < otherId);

    private void SiftUp(int c)
    {
        while (c > 0)
        {
            int p = (c - 1) >> 1;
            if (!Better(_scores[p], _ids[p], _scores[c], _ids[c])) break;
            (_scores[p], _scores[c]) = (_scores[c], _scores[p]);
            (_ids[p], _ids[c]) = (_ids[c], _ids[p]);
            c = p;
        }
    }

    private void SiftDown(int p)
    {
        while (true)
        {
            int l = 2 * p + 1, worst = p;
            if (l < _count && Better(_scores[worst], _ids[worst], _scores[l], _ids[l])) worst = l;
            if (l + 1 < _count && Better(_scores[worst], _ids[worst], _scores[l + 1], _ids[l + 1])) worst = l + 1;
            if (worst == p) return;
            (_scores[p], _scores[worst]) = (_scores[worst], _scores[p]);
            (_ids[p], _ids[worst]) = (_ids[worst], _ids[p]);
            p = worst;
        }
    }
}

/// <summary>
/// The k best rows per query of a batch scored block by block (any order of blocks with increasing ids): each query's
/// heap lives in its slice of the caller's result buffers between blocks, its fill count in a pooled array. Shared by
/// every exact search that scores in blocks (managed SIMD, TorchSharp GEMM), so they select and order alike.
/// </summary>
internal ref struct BlockedTopK
{
    private readonly Span<float> _scores;
    private readonly Span<int> _ids;
    private readonly int _k, _queries;
    private int[]? _counts;

    public BlockedTopK(Span<float> scores, Span<int> ids, int queries, int k)
    {
        _scores = scores;
        _ids = ids;
        _queries = queries;
        _k = k;
        _counts = ArrayPool<int>.Shared.Rent(queries);
        Array.Clear(_counts, 0, queries);
    }

    /// <summary>Offers query <paramref name="query"/>'s scores of one block of rows, whose first id is <paramref name="firstId"/>.</summary>
    public readonly void Offer(int query, ReadOnlySpan<float> blockScores, int firstId)
    {
        var top = TopK.Resume(_scores.Slice(query * _k, _k), _ids.Slice(query * _k, _k), _k, _counts![query]);
        VectorKernels.Select(blockScores, firstId, ref top);
        _counts[query] = top.Count;
    }

    /// <summary>Sorts every query's hits best first, in place: the search's answer (fails a query left with fewer than k).</summary>
    public readonly void Complete()
    {
        for (int q = 0; q < _queries; q++)
            SearchArguments.RequireFound(TopK.Resume(_scores.Slice(q * _k, _k), _ids.Slice(q * _k, _k), _k, _counts![q]).SortDescending(), _k, q);
    }

    /// <summary>Returns the pooled counts (also when the search failed part way).</summary>
    public void Dispose()
    {
        if (_counts is not null) ArrayPool<int>.Shared.Return(_counts);
        _counts = null;
    }
}
