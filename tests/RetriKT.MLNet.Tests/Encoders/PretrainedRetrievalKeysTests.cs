using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Data;
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
    public void MiniLMKeysRetrieveSameLabelNeighboursOnRealSst2()
    {
        var mlContext = new MLContext(seed: 1);
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        var labels = task.Labels.ToList();
        using var encoder = BertSentenceEncoder.Load(mlContext, PretrainedEncoderPackage.MiniLM);
        var store = new KnowledgeStore(labels, task.Train.Select(r => KnowledgeEntry.Gold(r.Text, null, labels.IndexOf(r.Label), labels.Count)))
            .WithEmbeddings(encoder, batchSize: 16);
        Assert.Equal(384, store.Dimension);
        var direct = encoder.Embed([task.Train[0].Text])[0];
        for (int d = 0; d < 384; d++) Assert.Equal(direct[d], store.Embedding(0)[d], 5);

        var test = task.Test.Take(160).ToList();
        var queries = encoder.Embed(test.Select(r => r.Text).ToList());
        var data = mlContext.Data.LoadFromEnumerable(queries.Select(q => new QueryRow { Features = q }));
        var retriever = mlContext.RetriKT().KnowledgeRetriever(store, k: 8).Fit(data);
        var soft = retriever.Transform(data).GetColumn<VBuffer<float>>("NeighborSoftLabels").Select(v => v.DenseValues().ToArray()).ToList();
        int correct = 0;
        for (int i = 0; i < test.Count; i++)
        {
            // Neighbour soft labels come as K × labels; the vote is their sum.
            var votes = new float[labels.Count];
            for (int j = 0; j < soft[i].Length; j++) votes[j % labels.Count] += soft[i][j];
            if (votes[labels.IndexOf(test[i].Label)] > votes[1 - labels.IndexOf(test[i].Label)]) correct++;
        }
        double accuracy = correct / (double)test.Count, majority = test.GroupBy(r => r.Label).Max(g => g.Count()) / (double)test.Count;
        Assert.True(accuracy >= majority + 0.05, $"8-NN vote over 32 gold SST-2 entries with MiniLM keys: {accuracy:P1}, majority {majority:P1}");
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
