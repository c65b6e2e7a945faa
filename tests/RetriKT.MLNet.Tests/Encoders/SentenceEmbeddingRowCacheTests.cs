using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// The sentence-embedding step runs the encoder once per row, however many readers its column has. A knowledge retriever
/// after it reads the column, so a prediction engine whose output class also holds <c>Features</c> (to log or cache the
/// query) ran the whole encoder twice per request: twice the serving latency for the same vector.
/// </summary>
public class SentenceEmbeddingRowCacheTests
{
    private sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    private sealed class NeighborsOnly
    {
        public int[] NeighborIds { get; set; } = [];
    }

    private sealed class FeaturesAndNeighbors
    {
        [VectorType(384)]
        public float[] Features { get; set; } = [];
        public int[] NeighborIds { get; set; } = [];
    }

    [SharedDataFact]
    public void ReadingTheEmbeddingBesideTheNeighboursRunsTheEncoderOncePerRow()
    {
        var ml = new MLContext(seed: 1);
        var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM, new ManagedBertSentenceEncoder.Options { MaxDegreeOfParallelism = 1 });
        var sentences = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(24).Select(r => r.Text).ToList();
        var store = new KnowledgeStore(["negative", "positive"], sentences.Take(16).Select((t, i) => KnowledgeEntry.Gold(t, null, i % 2, 2))).WithEmbeddings(encoder);
        var data = ml.Data.LoadFromEnumerable(sentences.Select(t => new TextRow { Text = t }));
        var model = ml.RetriKT().SentenceEmbedding(encoder).Append(ml.RetriKT().KnowledgeRetriever(store, k: 3)).Fit(data);
        using var neighborsOnly = ml.Model.CreatePredictionEngine<TextRow, NeighborsOnly>(model);
        using var both = ml.Model.CreatePredictionEngine<TextRow, FeaturesAndNeighbors>(model);
        var queries = sentences.Skip(16).ToList();
        neighborsOnly.Predict(new TextRow { Text = queries[0] });
        both.Predict(new TextRow { Text = queries[0] });

        // Counted by the encoder itself: a served call allocates nothing of the network's, so bytes no longer show a pass.
        long Passes(Action predict)
        {
            long before = encoder.TextsEncoded;
            predict();
            return encoder.TextsEncoded - before;
        }
        foreach (var query in queries)
        {
            Assert.Equal(1, Passes(() => neighborsOnly.Predict(new TextRow { Text = query })));
            FeaturesAndNeighbors result = null!;
            long passes = Passes(() => result = both.Predict(new TextRow { Text = query }));
            Assert.True(passes == 1, $"reading Features beside NeighborIds ran the encoder {passes} times for one row");
            Assert.Equal(encoder.Embed([query])[0], result.Features);
        }

        // Each request is still its own: the next text gets its own embedding and neighbours.
        var first = both.Predict(new TextRow { Text = sentences[3] });
        var second = both.Predict(new TextRow { Text = sentences[5] });
        Assert.Equal((3, 5), (first.NeighborIds[0], second.NeighborIds[0]));
        Assert.Equal(encoder.Embed([sentences[5]])[0], second.Features);
    }
}
