using System.Numerics.Tensors;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

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
/// The trained student at inference, in managed code: encoder + head (<see cref="ManagedStudentEncoder"/>), the
/// knowledge store, its search index (<see cref="IVectorIndex"/>, exact over the store's own embedding memory: the
/// embeddings are held once), λ and τ. p = λ·p_knn + (1 − λ)·p_head, p_knn = Σ softmax(sim/τ)·softlabel over the
/// top-k neighbours. Immutable and thread-safe (no shared scratch state). Holds no native memory.
/// </summary>
internal sealed class RetrievalModel
{
    public RetrievalModel(StudentConfig config, StudentWeights weights, TextTokenizingTransformer tokenizer, KnowledgeStore store,
        double temperature, int neighborCount)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(store);
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings.", nameof(store));
        if (store.Dimension != config.HiddenSize)
            throw new ArgumentException($"Store embeddings have dimension {store.Dimension}, the student's hidden size is {config.HiddenSize}.", nameof(store));
        if (store.LabelCount != config.LabelCount)
            throw new ArgumentException($"The store has {store.LabelCount} labels, the student head has {config.LabelCount}.", nameof(store));
        if (!(temperature > 0) || !double.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"Temperature must be positive, found {temperature}.");
        Config = config;
        Weights = weights;
        Tokenizer = tokenizer;
        Store = store;
        Temperature = temperature;
        NeighborCount = Math.Max(1, Math.Min(neighborCount, store.Count));
        Index = ExactIndex.For(store);
        Encoder = new ManagedStudentEncoder(config, weights);
    }

    public StudentConfig Config { get; }
    public StudentWeights Weights { get; }
    public TextTokenizingTransformer Tokenizer { get; }
    public KnowledgeStore Store { get; }
    public IVectorIndex Index { get; }
    public ManagedStudentEncoder Encoder { get; }
    public double Temperature { get; }
    public int NeighborCount { get; }
    public int LabelCount => Store.LabelCount;
    public int Dimension => Store.Dimension;

    public int[] Tokenize(string text, string? text2, out bool truncated) => Tokenizer.Encode(text, text2, out truncated);

    /// <summary>L2-normalised embeddings of a batch, row-major [B, D], written to <paramref name="destination"/>.</summary>
    public void Embed(IReadOnlyList<int[]> ids, Span<float> destination)
    {
        int d = Dimension;
        for (int i = 0; i < ids.Count; i++)
        {
            var row = destination.Slice(i * d, d);
            Encoder.Encode(ids[i], Tokenizer.Vocabulary.SepId, row);
            Normalize(row);
        }
    }

    /// <summary>
    /// Scores a block of rows (each row through <see cref="ScoreOne"/>; rows run in parallel, each row's result does
    /// not depend on the others), with the top-<paramref name="reportNeighbors"/> neighbours of each row.
    /// </summary>
    public ScoredBlock Score(IReadOnlyList<int[]> ids, double retrievalWeight, int reportNeighbors)
    {
        int b = ids.Count, labels = LabelCount;
        var block = new ScoredBlock(b, labels, reportNeighbors);
        if (b == 0) return block;
        Parallel.For(0, b, new ParallelOptions { MaxDegreeOfParallelism = Math.Min(b, Environment.ProcessorCount) }, i =>
            ScoreOne(ids[i], retrievalWeight, block.Scores.AsSpan(i * labels, labels),
                block.NeighborIndices.AsSpan(i * reportNeighbors, reportNeighbors), block.NeighborSimilarities.AsSpan(i * reportNeighbors, reportNeighbors)));
        return block;
    }

    /// <summary>
    /// One row: encoder, head, softmax; then (when λ &gt; 0 or neighbours are asked for) the normalised embedding's
    /// top-k neighbours from <see cref="Index"/> and p_knn. Absent neighbours (store smaller than asked) are reported
    /// as index −1, similarity NaN.
    /// </summary>
    public void ScoreOne(int[] ids, double retrievalWeight, Span<float> scores, Span<int> neighborIndices, Span<float> neighborSimilarities)
    {
        int labels = LabelCount, d = Dimension;
        Span<float> pooled = d <= 1024 ? stackalloc float[d] : new float[d];
        Span<float> logits = labels <= 256 ? stackalloc float[labels] : new float[labels];
        Encoder.Encode(ids, Tokenizer.Vocabulary.SepId, pooled);
        Encoder.Head(pooled, logits);
        TensorPrimitives.SoftMax(logits, scores);
        int report = neighborIndices.Length;
        if (retrievalWeight <= 0 && report == 0) return;
        Normalize(pooled);
        int k = Math.Min(Math.Max(NeighborCount, report), Index.Count);
        Span<int> idx = k <= 256 ? stackalloc int[k] : new int[k];
        Span<float> sims = k <= 256 ? stackalloc float[k] : new float[k];
        Index.Search(pooled, k, idx, sims);
        if (retrievalWeight > 0)
        {
            int used = Math.Min(NeighborCount, k);
            Span<float> weights = used <= 256 ? stackalloc float[used] : new float[used];
            for (int j = 0; j < used; j++) weights[j] = (float)(sims[j] / Temperature);
            TensorPrimitives.SoftMax(weights, weights);
            Span<float> knn = labels <= 256 ? stackalloc float[labels] : new float[labels];
            knn.Clear();
            for (int j = 0; j < used; j++) TensorPrimitives.MultiplyAdd(Store.SoftLabel(idx[j]), weights[j], knn, knn);
            float a = (float)retrievalWeight, c = (float)(1 - retrievalWeight);
            for (int i = 0; i < labels; i++) scores[i] = c * scores[i] + a * knn[i];
        }
        for (int j = 0; j < report; j++)
        {
            neighborIndices[j] = j < k ? idx[j] : -1;
            neighborSimilarities[j] = j < k ? sims[j] : float.NaN;
        }
    }

    /// <summary>Scales <paramref name="v"/> to unit length (a zero vector stays zero), as the training side's normalize(p=2, eps=1e-12).</summary>
    private static void Normalize(Span<float> v)
    {
        float norm = TensorPrimitives.Norm(v);
        TensorPrimitives.Divide(v, Math.Max(norm, 1e-12f), v);
    }
}
