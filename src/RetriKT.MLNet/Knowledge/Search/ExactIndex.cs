namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Exhaustive maximum inner-product search in managed code: the exact answer, at the memory-bandwidth bound for single
/// queries (SIMD scan, <see cref="VectorKernels"/>); batches score a cache-sized block of rows against every query
/// before moving on. The vectors are not copied. Immutable and thread-safe. (The training assembly adds a TorchSharp
/// GEMM variant for large batches, <c>TorchExactIndex</c>.)
/// </summary>
public sealed class ExactIndex : IVectorIndex, IDisposable
{
    private const int ScanChunk = 1024; // rows scored before selection: 4 KiB of scores stay in L1

    [ThreadStatic] private static float[]? t_scratch;

    private readonly ReadOnlyMemory<float> _vectors;
    private volatile bool _disposed;

    /// <summary>Indexes <paramref name="vectors"/> (row-major <c>count × dimension</c>; not copied, must not change).</summary>
    public ExactIndex(ReadOnlyMemory<float> vectors, int dimension)
    {
        Count = SearchArguments.CheckVectors(vectors, dimension);
        _vectors = vectors;
        Dimension = dimension;
    }

    /// <summary>An exact index over the embeddings of <paramref name="store"/> (ids = entry indices).</summary>
    public static ExactIndex For(KnowledgeStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings; call WithEmbeddings with the student encoder first.", nameof(store));
        return new ExactIndex(store.Embeddings, store.Dimension);
    }

    /// <inheritdoc/>
    public int Count { get; }
    /// <inheritdoc/>
    public int Dimension { get; }
    /// <summary>The indexed vectors, row-major <c>Count × Dimension</c>.</summary>
    public ReadOnlyMemory<float> Vectors => _vectors;

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SearchArguments.Check(this, query, 1, k, ids.Length, scores.Length);
        SearchManaged(query, k, ids, scores);
    }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SearchArguments.Check(this, queries, count, k, ids.Length, scores.Length);
        if (count == 0) return;
        SearchManagedBatch(queries, count, k, ids, scores);
    }

    private void SearchManaged(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores) =>
        SearchArguments.RequireFound(Scan(_vectors.Span, Count, Dimension, query, k, ids, scores), k, 0);

    /// <summary>
    /// One query's exact top-k over <paramref name="count"/> row-major vectors, best first; returns how many have a finite
    /// score. The scan this index searches with, and what <see cref="HnswIndex"/> answers with when its beam cannot reach k.
    /// </summary>
    internal static int Scan(ReadOnlySpan<float> vectors, int count, int dimension, ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
    {
        var chunk = (t_scratch ??= new float[ScanChunk]).AsSpan();
        var top = new TopK(scores, ids, k);
        for (int start = 0; start < count; start += ScanChunk)
        {
            int n = Math.Min(ScanChunk, count - start);
            VectorKernels.Scores(query, vectors.Slice(start * dimension, n * dimension), n, chunk);
            VectorKernels.Select(chunk[..n], start, ref top);
        }
        return top.SortDescending();
    }

    /// <summary>
    /// Managed batch: a block of rows small enough to stay in L2 is scored against every query before moving on, so
    /// the vectors are read from memory once per batch instead of once per query.
    /// </summary>
    private void SearchManagedBatch(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
    {
        if (count == 1) { SearchManaged(queries, k, ids, scores); return; }
        int d = Dimension;
        int block = Math.Clamp((256 * 1024) / (4 * d) & ~3, 4, ScanChunk); // ~256 KiB of vectors per block
        var chunk = (t_scratch ??= new float[ScanChunk]).AsSpan();
        using var top = new BlockedTopK(scores, ids, count, k);
        var vectors = _vectors.Span;
        for (int start = 0; start < Count; start += block)
        {
            int n = Math.Min(block, Count - start);
            var rows = vectors.Slice(start * d, n * d);
            for (int q = 0; q < count; q++)
            {
                VectorKernels.Scores(queries.Slice(q * d, d), rows, n, chunk);
                top.Offer(q, chunk[..n], start);
            }
        }
        top.Complete();
    }

    /// <summary>Marks the index disposed (later searches throw <see cref="ObjectDisposedException"/>); it holds no native memory.</summary>
    public void Dispose() => _disposed = true;
}
