using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using TorchSharp;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Exact maximum-inner-product search over the store embeddings (unit length, so inner product = cosine). Batches go
/// through one TorchSharp matmul + topk; single queries through a managed loop with <see cref="TensorPrimitives"/>.
/// Kept small and internal so it can be swapped for the shared Knowledge index later. Immutable and thread-safe.
/// </summary>
internal sealed class ExactInnerProductSearch : IDisposable
{
    private readonly float[] _embeddings;
    private readonly Tensor _matrix;

    public ExactInnerProductSearch(float[] embeddings, int count, int dimension, Device device)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), $"The store must hold at least one entry, found {count}.");
        if (embeddings.Length != (long)count * dimension)
            throw new ArgumentException($"Embeddings hold {embeddings.Length} values, expected {count} × {dimension}.", nameof(embeddings));
        _embeddings = embeddings;
        Count = count;
        Dimension = dimension;
        _matrix = torch.tensor(embeddings, [count, dimension], device: device);
    }

    public int Count { get; }
    public int Dimension { get; }

    /// <summary>Store matrix [N, D] (read-only by convention).</summary>
    public Tensor Matrix => _matrix;

    /// <summary>Top-<paramref name="k"/> similarities and entry indices for queries [B, D], best first.</summary>
    public (Tensor Similarities, Tensor Indices) Search(Tensor queries, int k)
    {
        var sims = queries.matmul(_matrix.t());
        var (values, indices) = sims.topk(Math.Min(k, Count), dim: 1, largest: true, sorted: true);
        return (values, indices);
    }

    /// <summary>
    /// Top-<paramref name="k"/> for one query, best first (ties: lower index first). Returns the number written
    /// (min(k, Count)).
    /// </summary>
    public int Search(ReadOnlySpan<float> query, int k, Span<int> indices, Span<float> similarities)
    {
        if (query.Length != Dimension) throw new ArgumentException($"Query has {query.Length} values, expected {Dimension}.", nameof(query));
        k = Math.Min(k, Count);
        int found = 0;
        var store = _embeddings.AsSpan();
        for (int i = 0; i < Count; i++)
        {
            float s = TensorPrimitives.Dot(query, store.Slice(i * Dimension, Dimension));
            if (found == k && s <= similarities[k - 1]) continue;
            int at = found < k ? found++ : k - 1;
            while (at > 0 && similarities[at - 1] < s)
            {
                similarities[at] = similarities[at - 1];
                indices[at] = indices[at - 1];
                at--;
            }
            similarities[at] = s;
            indices[at] = i;
        }
        return found;
    }

    public void Dispose() => _matrix.Dispose();
}
