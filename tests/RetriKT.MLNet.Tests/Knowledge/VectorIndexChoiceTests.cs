using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Student;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The one choice of search structure (<see cref="VectorIndexes"/>): exact below the measured switch size, HNSW from
/// it with recall@16 ≥ 0.99 against exact on fresh queries, and either one when forced (retriever and student).
/// </summary>
public class VectorIndexChoiceTests
{
    private static KnowledgeStore Store(float[] embeddings, int dimension) => new KnowledgeStore(["a", "b"],
            Enumerable.Range(0, embeddings.Length / dimension).Select(i => new KnowledgeEntry(null, null, i % 2, i % 2 == 0 ? [0.9f, 0.1f] : [0.1f, 0.9f], 1, KnowledgeSource.Generated)))
        .WithEmbeddings(embeddings, dimension);

    /// <summary>
    /// Random unit vectors around 1,000 random centres (cosine ≈ 0.7 to theirs), as the switch point was measured on
    /// (bench's SearchSwitchReport): sentence embeddings cluster; uniform directions in 384 dimensions are the one
    /// shape where no graph search beats a scan.
    /// </summary>
    private static float[] Clustered(int count, int dimension, int seed)
    {
        var centres = VectorSearchTests.RandomUnitVectors(1000, dimension, seed: 99);
        var noise = VectorSearchTests.RandomUnitVectors(count, dimension, seed);
        var rng = new Random(seed);
        var v = new float[count * dimension];
        for (int i = 0; i < count; i++)
        {
            int c = rng.Next(1000);
            double norm = 0;
            for (int j = 0; j < dimension; j++) { v[i * dimension + j] = centres[c * dimension + j] + noise[i * dimension + j]; norm += v[i * dimension + j] * v[i * dimension + j]; }
            for (int j = 0; j < dimension; j++) v[i * dimension + j] /= (float)Math.Sqrt(norm);
        }
        return v;
    }

    [Fact]
    public void BelowTheSwitchSizeAutoIsExactAndEitherKindCanBeForced()
    {
        var store = Store(VectorSearchTests.RandomUnitVectors(2_000, 48, seed: 1), 48);
        Assert.False(VectorIndexes.PrefersHnsw(store.Count, store.Dimension));
        Assert.IsType<ExactIndex>(VectorIndexes.For(store));
        Assert.IsType<ExactIndex>(VectorIndexes.For(store, RetrieverIndexKind.Exact));
        Assert.IsType<HnswIndex>(VectorIndexes.For(store, RetrieverIndexKind.Hnsw));
        // The switch sizes docs/SEARCH.md derives from the measurement: 32,768 entries at dimension 384, 262,144 at 48.
        Assert.Equal(262_144, VectorIndexes.HnswMinimumCount(48));
        Assert.Equal(32_768, VectorIndexes.HnswMinimumCount(384));
        Assert.True(VectorIndexes.PrefersHnsw(32_768, 384));
        Assert.False(VectorIndexes.PrefersHnsw(32_767, 384));
        // The retriever's default is the automatic choice.
        var ml = new MLContext(seed: 1);
        var queries = ml.Data.LoadFromEnumerable(new[] { new QueryRow { Features = store.Embedding(0).ToArray() } });
        using var retriever = ml.RetriKT().KnowledgeRetriever(store, k: 4).Fit(queries);
        Assert.IsType<ExactIndex>(retriever.Index);
    }

    [Fact]
    public void AtTheSwitchSizeAutoBuildsHnswWithRecallOfAtLeast099OnFreshQueries()
    {
        const int dimension = 384; // the cheapest switch size to build: 32,768 entries
        var store = Store(Clustered(VectorIndexes.HnswMinimumCount(dimension), dimension, seed: 2), dimension);
        var index = VectorIndexes.For(store);
        var hnsw = Assert.IsType<HnswIndex>(index); // a graph that missed 0.99 at build would have given exact search
        Assert.True(hnsw.MeasuredRecall >= VectorIndexes.AutoTargetRecall, $"build-time recall {hnsw.MeasuredRecall}");
        const int queries = 200;
        var fresh = Clustered(queries, dimension, seed: 3);
        double recall = hnsw.Recall(ExactIndex.For(store), fresh, queries, VectorIndexes.AutoRecallK);
        Assert.True(recall >= 0.99, $"recall@{VectorIndexes.AutoRecallK} on {queries} fresh random queries: {recall:F4}");

        // The same beam given in the options: its recall was never measured (NaN), so Auto built the graph and then
        // fell back to exact search every time. It is measured now, and the graph is kept.
        var given = VectorIndexes.For(store, RetrieverIndexKind.Auto, VectorIndexes.AutoHnswOptions() with { EfSearch = hnsw.EfSearch });
        Assert.Equal(hnsw.MeasuredRecall, Assert.IsType<HnswIndex>(given).MeasuredRecall);
    }

    private sealed class QueryRow
    {
        [Microsoft.ML.Data.VectorType(48)]
        public float[] Features { get; set; } = [];
    }

    [Fact]
    public void TheStudentSearchesExactlyByDefaultAndTheSameWithAForcedGraphOnASmallStore()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8, NeighborCount = 8, RetrievalWeight = 0.5,
        }).Fit(keyMap.Transform(data));
        Assert.IsType<ExactIndex>(student.Index);
        using var graph = student.WithIndex(RetrieverIndexKind.Hnsw);
        Assert.IsType<HnswIndex>(graph.Index);
        // 40 entries and a beam of at least k: the graph finds the true neighbours, so the scores are the same up to the
        // order the vote adds them in (the graph returns them in another order: 0.768283188 against 0.768283129 on one
        // machine). A wrong neighbour would move a score by far more than 1e-6.
        foreach (var row in RetrievalClassifierBehaviourTests.Synthetic(10, 7))
        {
            var exact = student.Predict(row.Text).Scores;
            var approximate = graph.Predict(row.Text).Scores;
            Assert.Equal(exact.Length, approximate.Length);
            for (int i = 0; i < exact.Length; i++)
                Assert.True(Math.Abs(exact[i] - approximate[i]) <= 1e-6f, $"'{row.Text}' label {i}: exact search {exact[i]:R}, graph {approximate[i]:R}");
        }
    }
}
