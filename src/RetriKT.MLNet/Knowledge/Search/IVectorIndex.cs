namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Maximum inner-product search over a fixed set of vectors (for unit vectors: cosine similarity). Implementations:
/// <see cref="ExactIndex"/> (exhaustive, managed SIMD; the training assembly adds a TorchSharp GEMM variant for batches) and
/// <see cref="HnswIndex"/> (approximate graph search for large stores).
/// </summary>
/// <remarks>
/// <para>Results are ordered by decreasing score; equal scores are ordered by increasing id, so results are
/// deterministic. Ids are row indices of the indexed vectors (for a <see cref="KnowledgeStore"/>: entry indices).</para>
/// <para>All search methods are thread-safe and allocate no managed or native memory per query on the single-query
/// path (scratch buffers are per thread and reused).</para>
/// <para>Errors: <c>k</c> outside [1, Count], a query of the wrong length, or a query holding NaN or
/// infinity throw <see cref="ArgumentException"/> naming the argument, the expected and the found value; so do indexed
/// vectors holding NaN or infinity, when the index is made.</para>
/// </remarks>
public interface IVectorIndex
{
    /// <summary>Number of indexed vectors.</summary>
    int Count { get; }

    /// <summary>Vector dimension.</summary>
    int Dimension { get; }

    /// <summary>
    /// The <paramref name="k"/> vectors with the largest inner product with <paramref name="query"/> (length
    /// <see cref="Dimension"/>): ids into <paramref name="ids"/>, scores into <paramref name="scores"/> (both at least
    /// <paramref name="k"/> long).
    /// </summary>
    void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores);

    /// <summary>
    /// Batched search: <paramref name="queries"/> holds <paramref name="count"/> queries row-major
    /// (<c>count × Dimension</c>); results are written row-major (<c>count × k</c>) into <paramref name="ids"/> and
    /// <paramref name="scores"/>.
    /// </summary>
    void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores);
}

/// <summary>Argument checks shared by the index implementations, so every index reports bad input the same way.</summary>
internal static class SearchArguments
{
    /// <summary>
    /// Checks an index's row-major <c>count × dimension</c> vectors and returns the count. A NaN or infinite value is
    /// refused: its row's score is NaN for every query, never selected, and a search would return fewer than k rows.
    /// </summary>
    public static int CheckVectors(ReadOnlyMemory<float> vectors, int dimension)
    {
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), $"Dimension must be positive, found {dimension}.");
        if (vectors.Length % dimension != 0)
            throw new ArgumentException($"Vectors hold {vectors.Length} values, not a multiple of dimension {dimension}.", nameof(vectors));
        int count = vectors.Length / dimension;
        var all = vectors.Span;
        if (!AllFinite(all))
            for (int i = 0; i < count; i++)
            {
                var row = all.Slice(i * dimension, dimension);
                if (!AllFinite(row))
                    throw new ArgumentException($"Vector {i} holds NaN or infinity (value {FirstNonFinite(row)}); indexed vectors must be finite.", nameof(vectors));
            }
        return count;
    }

    /// <summary>
    /// Fails query <paramref name="query"/> whose selection kept <paramref name="found"/> &lt; <paramref name="k"/> rows:
    /// with finite inputs that happens only when inner products overflow to −∞ or NaN (never better than the empty
    /// heap's −∞), and the unfilled result slots would otherwise be returned as the caller left them.
    /// </summary>
    public static void RequireFound(int found, int k, int query)
    {
        if (found < k)
            throw new InvalidOperationException($"Query {query}: {found} of k = {k} neighbours have a finite score; the query or the indexed vectors are too large (their inner products overflow): normalise them.");
    }

    public static void Check(IVectorIndex index, ReadOnlySpan<float> queries, int count, int k, int idsLength, int scoresLength)
    {
        if (index.Count == 0) throw new InvalidOperationException("The index is empty: a knowledge store with no entries cannot be searched.");
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), $"Query count must be >= 0, found {count}.");
        if (k < 1 || k > index.Count)
            throw new ArgumentOutOfRangeException(nameof(k), $"k must be in [1, {index.Count}] (the number of indexed vectors), found {k}.");
        long expected = (long)count * index.Dimension;
        if (queries.Length != expected)
            throw new ArgumentException($"Queries hold {queries.Length} values, expected {count} × dimension {index.Dimension} = {expected}.", nameof(queries));
        long results = (long)count * k;
        if (idsLength < results) throw new ArgumentException($"ids holds {idsLength} slots, expected at least {count} × k {k} = {results}.", "ids");
        if (scoresLength < results) throw new ArgumentException($"scores holds {scoresLength} slots, expected at least {count} × k {k} = {results}.", "scores");
        for (int q = 0; q < count; q++)
        {
            var row = queries.Slice(q * index.Dimension, index.Dimension);
            if (!AllFinite(row))
                throw new ArgumentException($"Query {q} holds NaN or infinity (value {FirstNonFinite(row)}); queries must be finite.", nameof(queries));
        }
    }

    public static bool AllFinite(ReadOnlySpan<float> v)
    {
        // x - x is 0 for finite x and NaN for NaN/±inf; summing those keeps the check branch-free and vectorised.
        float acc = 0;
        for (int i = 0; i < v.Length; i++) acc += v[i] - v[i];
        return acc == 0;
    }

    private static float FirstNonFinite(ReadOnlySpan<float> v)
    {
        foreach (var x in v) if (!float.IsFinite(x)) return x;
        return 0;
    }
}
