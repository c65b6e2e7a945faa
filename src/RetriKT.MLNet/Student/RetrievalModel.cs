using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>Token ids of a batch, padded: ids, segment ids and the padding mask as tensors.</summary>
internal static class TokenBatch
{
    public static (Tensor Ids, Tensor Segments, Tensor Mask) Collate(IReadOnlyList<int[]> rows, int sepId, Device device)
    {
        int b = rows.Count, t = Math.Max(1, rows.Max(r => r.Length));
        var ids = new long[b * t];
        var segments = new long[b * t];
        var mask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var row = rows[i];
            int segment = 0;
            for (int j = 0; j < row.Length; j++)
            {
                ids[i * t + j] = row[j];
                segments[i * t + j] = segment;
                mask[i * t + j] = 1;
                if (row[j] == sepId) segment = 1; // tokens after the first [SEP] belong to the second text
            }
        }
        return (torch.tensor(ids, [b, t], device: device), torch.tensor(segments, [b, t], device: device),
            torch.tensor(mask, [b, t], device: device));
    }
}

/// <summary>Scores of a block of rows: label distribution per row and the reported neighbours.</summary>
internal sealed class ScoredBlock(int rows, int labels, int neighbors)
{
    public int Rows { get; } = rows;
    public float[] Scores { get; } = new float[rows * labels];
    public int[] NeighborIndices { get; } = new int[rows * neighbors];
    public float[] NeighborSimilarities { get; } = new float[rows * neighbors];
    public int NeighborsPerRow { get; } = neighbors;
}

/// <summary>
/// The trained student at inference: encoder + head, the knowledge store with embeddings, the exact search, λ and τ.
/// Immutable and thread-safe: forward passes run under <c>no_grad</c> in eval mode with a dispose scope per call and
/// no RNG use. Reference-counted so transformers sharing it (for example <see cref="RetrievalClassifierTransformer.WithRetrievalWeight"/>)
/// dispose the native state once.
/// </summary>
internal sealed class RetrievalModel
{
    private readonly Tensor _softLabels;
    private int _references = 1;

    public RetrievalModel(StudentModel network, TextTokenizingTransformer tokenizer, KnowledgeStore store, double temperature, int neighborCount, Device device)
    {
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings.", nameof(store));
        if (store.Dimension != network.Config.HiddenSize)
            throw new ArgumentException($"Store embeddings have dimension {store.Dimension}, the student's hidden size is {network.Config.HiddenSize}.", nameof(store));
        if (store.LabelCount != network.Config.LabelCount)
            throw new ArgumentException($"The store has {store.LabelCount} labels, the student head has {network.Config.LabelCount}.", nameof(store));
        if (!(temperature > 0) || !double.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"Temperature must be positive, found {temperature}.");
        Network = network;
        Network.eval();
        Tokenizer = tokenizer;
        Store = store;
        Temperature = temperature;
        NeighborCount = Math.Max(1, Math.Min(neighborCount, store.Count));
        Device = device;
        Search = new ExactInnerProductSearch(store.Embeddings.ToArray(), store.Count, store.Dimension, device);
        _softLabels = torch.tensor(store.SoftLabels.ToArray(), [store.Count, store.LabelCount], device: device);
        Managed = new ManagedStudentEncoder(network);
    }

    public StudentModel Network { get; }
    public TextTokenizingTransformer Tokenizer { get; }
    public KnowledgeStore Store { get; }
    public ExactInnerProductSearch Search { get; }
    public ManagedStudentEncoder Managed { get; }
    public double Temperature { get; }
    public int NeighborCount { get; }
    public Device Device { get; }
    public int LabelCount => Store.LabelCount;
    public int Dimension => Store.Dimension;

    public RetrievalModel AddReference() { Interlocked.Increment(ref _references); return this; }

    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        Search.Dispose();
        _softLabels.Dispose();
        Network.Dispose();
    }

    public int[] Tokenize(string text, string? text2, out bool truncated) => Tokenizer.Encode(text, text2, out truncated);

    /// <summary>L2-normalised embeddings of a batch, row-major [B, D], written to <paramref name="destination"/>.</summary>
    public void Embed(IReadOnlyList<int[]> ids, Span<float> destination)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (tokens, segments, mask) = TokenBatch.Collate(ids, Tokenizer.Vocabulary.SepId, Device);
        var embeddings = nn.functional.normalize(Network.Encode(tokens, segments, mask), p: 2, dim: 1).cpu();
        embeddings.data<float>().CopyTo(destination);
    }

    /// <summary>
    /// Scores a block in one forward pass: p = λ·p_knn + (1 − λ)·p_head, p_knn = Σ softmax(sim/τ)·softlabel over the
    /// top-k neighbours; also the top-<paramref name="reportNeighbors"/> neighbours.
    /// </summary>
    public ScoredBlock Score(IReadOnlyList<int[]> ids, double retrievalWeight, int reportNeighbors)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        int b = ids.Count, labels = LabelCount;
        var block = new ScoredBlock(b, labels, reportNeighbors);
        if (b == 0) return block;
        var (tokens, segments, mask) = TokenBatch.Collate(ids, Tokenizer.Vocabulary.SepId, Device);
        var pooled = Network.Encode(tokens, segments, mask);
        var probabilities = Network.Head(pooled).softmax(-1);
        if (retrievalWeight > 0 || reportNeighbors > 0)
        {
            var query = nn.functional.normalize(pooled, p: 2, dim: 1);
            var (sims, indices) = Search.Search(query, Math.Max(NeighborCount, reportNeighbors));
            if (retrievalWeight > 0)
            {
                var k = Math.Min(NeighborCount, (int)sims.shape[1]);
                var knn = Knn(sims.narrow(1, 0, k), indices.narrow(1, 0, k), Temperature);
                probabilities = probabilities.mul((float)(1 - retrievalWeight)).add_(knn.mul_((float)retrievalWeight));
            }
            if (reportNeighbors > 0)
            {
                int r = Math.Min(reportNeighbors, (int)sims.shape[1]);
                var topSims = sims.narrow(1, 0, r).cpu().data<float>().ToArray();
                var topIds = indices.narrow(1, 0, r).cpu().data<long>().ToArray();
                for (int i = 0; i < b; i++)
                    for (int j = 0; j < reportNeighbors; j++)
                    {
                        bool present = j < r;
                        block.NeighborIndices[i * reportNeighbors + j] = present ? (int)topIds[i * r + j] : -1;
                        block.NeighborSimilarities[i * reportNeighbors + j] = present ? topSims[i * r + j] : float.NaN;
                    }
            }
        }
        probabilities.cpu().data<float>().CopyTo(block.Scores);
        return block;
    }

    /// <summary>p_knn [B, K] from neighbour similarities and indices [B, k].</summary>
    public Tensor Knn(Tensor similarities, Tensor indices, double temperature)
        => Knn(similarities, indices, torch.tensor((float)temperature, device: Device), _softLabels);

    /// <summary>p_knn with a tensor temperature (differentiable in training) over soft labels [N, K].</summary>
    public static Tensor Knn(Tensor similarities, Tensor indices, Tensor temperature, Tensor softLabels)
    {
        var weights = (similarities / temperature).softmax(-1);                                    // [B, k]
        var neighborLabels = softLabels.index_select(0, indices.flatten()).view(indices.shape[0], indices.shape[1], softLabels.shape[1]);
        return (weights.unsqueeze(-1) * neighborLabels).sum(1);                                   // [B, K]
    }

    /// <summary>
    /// One row through the managed path (no TorchSharp calls): encoder in float arrays + TensorPrimitives, exact
    /// search, same formula as <see cref="Score"/>. Scores agree with the batched path to float rounding.
    /// </summary>
    public void ScoreOne(int[] ids, double retrievalWeight, Span<float> scores, Span<int> neighborIndices, Span<float> neighborSimilarities)
    {
        int labels = LabelCount, d = Dimension;
        Span<float> pooled = d <= 1024 ? stackalloc float[d] : new float[d];
        Span<float> logits = labels <= 256 ? stackalloc float[labels] : new float[labels];
        Managed.Encode(ids, Tokenizer.Vocabulary.SepId, pooled);
        Managed.Head(pooled, logits);
        System.Numerics.Tensors.TensorPrimitives.SoftMax(logits, scores);
        int report = neighborIndices.Length;
        if (retrievalWeight <= 0 && report == 0) return;
        float norm = System.Numerics.Tensors.TensorPrimitives.Norm(pooled);
        System.Numerics.Tensors.TensorPrimitives.Divide(pooled, Math.Max(norm, 1e-12f), pooled);
        int k = Math.Max(NeighborCount, report);
        var idx = new int[k];
        var sims = new float[k];
        int found = Search.Search(pooled, k, idx, sims);
        if (retrievalWeight > 0)
        {
            int used = Math.Min(NeighborCount, found);
            Span<float> weights = stackalloc float[used];
            for (int j = 0; j < used; j++) weights[j] = (float)(sims[j] / Temperature);
            System.Numerics.Tensors.TensorPrimitives.SoftMax(weights, weights);
            Span<float> knn = labels <= 256 ? stackalloc float[labels] : new float[labels];
            knn.Clear();
            for (int j = 0; j < used; j++)
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(Store.SoftLabel(idx[j]), weights[j], knn, knn);
            float a = (float)retrievalWeight, c = (float)(1 - retrievalWeight);
            for (int i = 0; i < labels; i++) scores[i] = c * scores[i] + a * knn[i];
        }
        for (int j = 0; j < report; j++)
        {
            neighborIndices[j] = j < found ? idx[j] : -1;
            neighborSimilarities[j] = j < found ? sims[j] : float.NaN;
        }
    }
}
