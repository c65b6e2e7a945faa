using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.RoundTrip;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

public class KnowledgeRetrieverTests
{
    private const int Dimension = 16;

    private sealed class QueryRow
    {
        [VectorType(Dimension)]
        public float[] Features { get; set; } = [];
    }

    private sealed class ScalarRow
    {
        public float Features { get; set; }
    }

    private sealed class WrongQueryRow
    {
        [VectorType(8)]
        public float[] Features { get; set; } = [];
    }

    /// <summary>Signed feature hashing of lower-cased words: a stand-in encoder until the student exists; similar
    /// sentences share words, so a stored sentence retrieves itself first.</summary>
    private static float[] Embed(string text)
    {
        var v = new float[Dimension];
        foreach (var word in text.ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            uint h = 2166136261;
            foreach (char c in word) { h ^= c; h *= 16777619; }
            v[h % Dimension] += (h & 0x80000000) != 0 ? 1 : -1;
        }
        if (v.All(x => x == 0)) v[0] = 1;
        return v;
    }

    private static KnowledgeStore Sst2Store(out List<TextRow> rows)
    {
        rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"));
        var store = new KnowledgeStore(["negative", "positive"], rows.Select((r, i) =>
        {
            int label = int.Parse(r.Label);
            float p = 0.7f + 0.01f * (i % 20); // teacher-like soft labels, distinct per entry
            return new KnowledgeEntry(r.Text, null, label, label == 1 ? [1 - p, p] : [p, 1 - p], p, KnowledgeSource.Generated);
        }));
        return store.WithEmbeddings(rows.SelectMany(r => Embed(r.Text)).ToArray(), Dimension);
    }

    private static KnowledgeStore RandomStore(int count, int seed)
    {
        var store = new KnowledgeStore(["a", "b", "c"], Enumerable.Range(0, count).Select(i =>
            new KnowledgeEntry($"entry {i}", null, i % 3, i % 3 == 0 ? [0.8f, 0.1f, 0.1f] : i % 3 == 1 ? [0.1f, 0.8f, 0.1f] : [0.2f, 0.2f, 0.6f], 1, KnowledgeSource.Generated)));
        return store.WithEmbeddings(VectorSearchTests.RandomUnitVectors(count, Dimension, seed), Dimension);
    }

    [SharedDataFact]
    public void RetrievesTheNearestEntriesWithTheirSoftLabelsAndTexts()
    {
        var mlContext = new MLContext(seed: 1);
        var store = Sst2Store(out var rows);
        var queries = mlContext.Data.LoadFromEnumerable(rows.Select(r => new QueryRow { Features = Embed(r.Text) }));
        var model = mlContext.RetriKT().KnowledgeRetriever(store, new KnowledgeRetrieverEstimator.Options { K = 4, NeighborTextsColumnName = "NeighborTexts" }).Fit(queries);
        var output = model.Transform(queries);

        var ids = output.GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.DenseValues().ToArray()).ToList();
        var sims = output.GetColumn<VBuffer<float>>("NeighborSimilarities").Select(v => v.DenseValues().ToArray()).ToList();
        var soft = output.GetColumn<VBuffer<float>>("NeighborSoftLabels").Select(v => v.DenseValues().ToArray()).ToList();
        var texts = output.GetColumn<VBuffer<ReadOnlyMemory<char>>>("NeighborTexts").Select(v => v.DenseValues().Select(t => t.ToString()).ToArray()).ToList();
        Assert.Equal(rows.Count, ids.Count);
        int selfFirst = 0;
        for (int row = 0; row < rows.Count; row++)
        {
            Assert.Equal(4, ids[row].Length);
            Assert.Equal(8, soft[row].Length);
            if (ids[row][0] == row || store.Embedding(ids[row][0]).SequenceEqual(store.Embedding(row))) selfFirst++;
            Assert.Equal(1f, sims[row][0], 4); // the query is the stored sentence's own embedding
            for (int j = 0; j < 4; j++)
            {
                int id = ids[row][j];
                Assert.Equal(store.SoftLabel(id).ToArray(), soft[row].AsSpan(j * 2, 2).ToArray());
                Assert.Equal(rows[id].Text, texts[row][j]);
                float exact = VectorKernelsReference(store.Embedding(id), Normalize(Embed(rows[row].Text)));
                Assert.Equal(exact, sims[row][j], 4);
            }
        }
        Assert.Equal(rows.Count, selfFirst);
        Assert.Same(store, model.Store);
        Assert.IsType<ExactIndex>(model.Index);
    }

    private static float[] Normalize(float[] v) { var n = MathF.Sqrt(v.Sum(x => x * x)); return v.Select(x => x / n).ToArray(); }
    private static float VectorKernelsReference(ReadOnlySpan<float> a, float[] b) { double s = 0; for (int i = 0; i < b.Length; i++) s += a[i] * b[i]; return (float)s; }

    [Fact]
    public void BadStoresColumnsAndQueriesFailNamingTheProblem()
    {
        var mlContext = new MLContext(seed: 1);
        var store = RandomStore(10, seed: 1);
        var good = mlContext.Data.LoadFromEnumerable(new[] { new QueryRow { Features = store.Embedding(0).ToArray() } });

        var empty = new KnowledgeStore(["a", "b"], []).WithEmbeddings([], Dimension);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => mlContext.RetriKT().KnowledgeRetriever(empty).Fit(good)).Message);
        var noEmbeddings = store.WithoutEmbeddings();
        Assert.Contains("no embeddings", Assert.Throws<ArgumentException>(() => mlContext.RetriKT().KnowledgeRetriever(noEmbeddings).Fit(good)).Message);
        Assert.Contains("K = 11 exceeds the knowledge store's 10 entries",
            Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().KnowledgeRetriever(store, k: 11).Fit(good)).Message);

        var wrong = mlContext.Data.LoadFromEnumerable(new[] { new WrongQueryRow { Features = new float[8] } });
        var mismatch = Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().KnowledgeRetriever(store).Fit(wrong));
        Assert.Contains("Column 'Features' has 8 values per row; expected 16", mismatch.Message);
        Assert.Contains("'Embedding' not found", Assert.Throws<ArgumentOutOfRangeException>(() =>
            mlContext.RetriKT().KnowledgeRetriever(store, inputColumnName: "Embedding").Fit(good)).Message);
        var estimator = mlContext.RetriKT().KnowledgeRetriever(store, k: 3);
        Assert.Contains("'Features' has type Single; expected a vector of Single of size 16", Assert.Throws<ArgumentOutOfRangeException>(() =>
            estimator.Fit(mlContext.Data.LoadFromEnumerable(new[] { new ScalarRow() }))).Message);
        var model = estimator.Fit(good);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Transform(wrong));

        var nanRow = store.Embedding(1).ToArray();
        nanRow[5] = float.NaN;
        var withNan = mlContext.Data.LoadFromEnumerable(new[] { new QueryRow { Features = store.Embedding(0).ToArray() }, new QueryRow { Features = nanRow } });
        var error = Assert.ThrowsAny<Exception>(() => model.Transform(withNan).GetColumn<VBuffer<int>>("NeighborIds").ToList());
        Assert.Contains("Column 'Features' row 1: the query embedding holds NaN", Flatten(error));
        var zero = mlContext.Data.LoadFromEnumerable(new[] { new QueryRow { Features = new float[Dimension] } });
        Assert.Contains("norm 0", Flatten(Assert.ThrowsAny<Exception>(() => model.Transform(zero).GetColumn<VBuffer<int>>("NeighborIds").ToList())));
    }

    /// <summary>
    /// The query's norm was summed in float: a stored entry's own embedding scaled by 1e-22 came back with similarity
    /// 1.09 to itself (the squares underflow), and scaled by 1e20 (finite values) it failed with "norm Infinity".
    /// Normalised queries give the same cosines whatever their scale.
    /// </summary>
    [Fact]
    public void QueriesOfTinyOrHugeValuesGetTheCosinesOfTheirDirection()
    {
        var mlContext = new MLContext(seed: 1);
        var store = RandomStore(50, seed: 6);
        var direction = store.Embedding(3).ToArray();
        (int[] Ids, float[] Similarities) Retrieve(float scale)
        {
            var data = mlContext.Data.LoadFromEnumerable(new[] { new QueryRow { Features = direction.Select(x => x * scale).ToArray() } });
            var output = mlContext.RetriKT().KnowledgeRetriever(store, k: 3).Fit(data).Transform(data);
            return (output.GetColumn<VBuffer<int>>("NeighborIds").Single().DenseValues().ToArray(),
                    output.GetColumn<VBuffer<float>>("NeighborSimilarities").Single().DenseValues().ToArray());
        }
        var (ids, similarities) = Retrieve(1);
        Assert.Equal(3, ids[0]);
        Assert.Equal(1f, similarities[0], 1e-6f);
        foreach (float scale in new[] { 1e-22f, 1e-30f, 1e20f, 1e30f })
        {
            var (scaledIds, scaledSimilarities) = Retrieve(scale);
            Assert.Equal(ids, scaledIds);
            for (int j = 0; j < 3; j++)
                Assert.True(Math.Abs(scaledSimilarities[j] - similarities[j]) < 1e-6, $"scale {scale}: similarity {j} is {scaledSimilarities[j]}, {similarities[j]} at scale 1.");
        }

        // The store's embeddings are normalised by the same code: subnormal values (a norm below 1 / float.MaxValue) were
        // refused as "holds Infinity".
        var tiny = store.WithEmbeddings(store.Embeddings.ToArray().Select(x => x * 1e-41f).ToArray(), Dimension);
        for (int i = 0; i < tiny.Count; i++)
            Assert.Equal(1, Math.Sqrt(tiny.Embedding(i).ToArray().Sum(x => (double)x * x)), 3);
    }

    [Fact]
    public void ExactRetrieverRoundTripsThroughModelZipInAnotherProcess()
    {
        var mlContext = new MLContext(seed: 1);
        var store = RandomStore(300, seed: 2);
        var queries = mlContext.Data.LoadFromEnumerable(VectorSearchTests.RandomUnitVectors(20, Dimension, seed: 3).Chunk(Dimension).Select(q => new QueryRow { Features = q }));
        var model = mlContext.RetriKT().KnowledgeRetriever(store, k: 5).Fit(queries);
        using var result = CrossProcess.RoundTrip(mlContext, model, queries, engineContract: "knowledge-retriever");
        Assert.Contains(typeof(KnowledgeRetrieverTransformer).FullName!, result.LoadedTypes);
        Assert.Equal(21, result.Transform.Count);
        using var zip = ZipFile.OpenRead(result.ModelPath);
        Assert.Contains(zip.Entries, e => e.FullName.EndsWith("KnowledgeStore.bin", StringComparison.Ordinal));
        Assert.DoesNotContain(zip.Entries, e => e.FullName.EndsWith("Hnsw.bin", StringComparison.Ordinal));
    }

    [Fact]
    public void HnswRetrieverRoundTripsAndATamperedGraphInModelZipIsReportedByName()
    {
        var mlContext = new MLContext(seed: 1);
        var store = RandomStore(2000, seed: 4);
        var queries = mlContext.Data.LoadFromEnumerable(VectorSearchTests.RandomUnitVectors(30, Dimension, seed: 5).Chunk(Dimension).Select(q => new QueryRow { Features = q }));
        var model = mlContext.RetriKT().KnowledgeRetriever(store, k: 5, index: RetrieverIndexKind.Hnsw).Fit(queries);
        var hnsw = Assert.IsType<HnswIndex>(model.Index);
        Assert.True(hnsw.MeasuredRecall >= 0.97);
        using var result = CrossProcess.RoundTrip(mlContext, model, queries, engineContract: "knowledge-retriever");
        Assert.Equal(31, result.Transform.Count);

        var broken = Path.Combine(Path.GetDirectoryName(result.ModelPath)!, "broken.zip");
        File.Copy(result.ModelPath, broken);
        using (var zip = ZipFile.Open(broken, ZipArchiveMode.Update))
        {
            var entry = zip.Entries.First(e => e.FullName.EndsWith("Hnsw.bin", StringComparison.Ordinal));
            byte[] bytes;
            using (var s = entry.Open()) { using var ms = new MemoryStream(); s.CopyTo(ms); bytes = ms.ToArray(); }
            entry.Delete();
            using var w = zip.CreateEntry(entry.FullName).Open();
            w.Write(bytes.AsSpan(0, bytes.Length / 2)); // truncated graph
        }
        var error = Flatten(Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(broken, out _)));
        Assert.Contains("Hnsw.bin", error);
        Assert.Contains("truncated", error);
    }

    private static string Flatten(Exception e) => e.InnerException is null ? e.Message : e.Message + " | " + Flatten(e.InnerException);
}
