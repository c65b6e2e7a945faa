using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.Samples.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>A pretrained encoder as the knowledge store's key encoder (<see cref="IStoreEncoder"/>) and the retriever's query encoder.</summary>
public class PretrainedRetrievalKeysTests
{
    private sealed class QueryRow
    {
        [VectorType(384)]
        public float[] Features { get; set; } = [];
    }

    [SharedDataFact]
    public void MiniLMKeysAndQueriesAgreeInTheRetrieverOnRealSst2()
    {
        var mlContext = new MLContext(seed: 1);
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        var labels = task.Labels.ToList();
        using var encoder = BertSentenceEncoder.Load(mlContext, PretrainedEncoderPackage.MiniLM);
        var store = new KnowledgeStore(labels, task.Train.Select(r => KnowledgeEntry.Gold(r.Text, null, labels.IndexOf(r.Label), labels.Count)))
            .WithEmbeddings(encoder, batchSize: 16);
        Assert.Equal(384, store.Dimension);

        // Queries: the store's own texts (each must find itself) and real test sentences (top-1 must be the exact argmax).
        var texts = task.Train.Select(r => r.Text).Concat(task.Test.Take(48).Select(r => r.Text)).ToList();
        var queries = encoder.Embed(texts);
        var data = mlContext.Data.LoadFromEnumerable(queries.Select(q => new QueryRow { Features = q }));
        var output = mlContext.RetriKT().KnowledgeRetriever(store, k: 4).Fit(data).Transform(data);
        var ids = output.GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.DenseValues().ToArray()).ToList();
        var sims = output.GetColumn<VBuffer<float>>("NeighborSimilarities").Select(v => v.DenseValues().ToArray()).ToList();
        for (int q = 0; q < texts.Count; q++)
        {
            var exact = Enumerable.Range(0, store.Count).Select(i => (Id: i, Sim: Dot(queries[q], store.Embedding(i)))).MaxBy(x => x.Sim);
            if (q < task.Train.Count)
            {
                // A text repeated in the few-shot split may find its twin first; either way the similarity is 1.
                Assert.True(store.Entries[ids[q][0]].Text == texts[q], $"query {q} '{texts[q]}' found entry {ids[q][0]} first");
                Assert.True(sims[q][0] > 0.9999f, $"query {q}: self-similarity {sims[q][0]}");
            }
            else Assert.True(ids[q][0] == exact.Id && Math.Abs(sims[q][0] - exact.Sim) < 1e-5,
                $"query {q} '{texts[q]}': retriever top-1 {ids[q][0]} ({sims[q][0]}), exact top-1 {exact.Id} ({exact.Sim})");
            Assert.True(sims[q][3] < sims[q][0], $"query {q}: neighbours are not ranked");
        }
    }

    private static float Dot(float[] a, ReadOnlySpan<float> b)
    {
        float s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    [SharedDataFact]
    public void PairsAreOneBertInputTruncatedLongestFirst()
    {
        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), PretrainedEncoderPackage.MiniLM, new BertSentenceEncoder.Options { MaxTokens = 12 });
        var v = encoder.Vocabulary;
        var pair = encoder.Tokenize("a b c d e f g h", "x y");
        Assert.Equal(12, pair.Length);
        Assert.Equal([v.ClsId, .. v.Encode("a b c d e f g"), v.SepId, .. v.Encode("x y"), v.SepId], pair);
        Assert.Equal(12, encoder.Tokenize("one two three four five six seven eight nine ten eleven twelve").Length);
    }
}
