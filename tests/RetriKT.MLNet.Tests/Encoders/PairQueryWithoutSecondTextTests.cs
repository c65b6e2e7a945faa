using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A sentence-embedding step over pairs (<c>secondInputColumnName</c>) given a row with an empty second text: the
/// retrieval classifier refuses such a row, but this step encoded it as <c>[CLS] a [SEP] [SEP]</c>, a query unlike every
/// pair the store was keyed with, and the retriever after it answered with neighbours as if nothing were wrong.
/// </summary>
public class PairQueryWithoutSecondTextTests
{
    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string? Text2 { get; set; } = "";
    }

    private sealed class Neighbors
    {
        public int[] NeighborIds { get; set; } = [];
    }

    [SharedDataFact]
    public void ARowWithoutItsSecondTextIsRefusedNamingTheRowAndTheColumns()
    {
        var ml = new MLContext(seed: 1);
        var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM, new ManagedBertSentenceEncoder.Options { MaxDegreeOfParallelism = 1 });
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13);
        var store = new KnowledgeStore(task.Labels.ToArray(), task.Train.Select(r => KnowledgeEntry.Gold(r.Text, r.Text2, task.Labels.ToList().IndexOf(r.Label), task.Labels.Count)))
            .WithEmbeddings(encoder);
        var rows = task.Dev.Take(4).Select(r => new PairRow { Text = r.Text, Text2 = r.Text2 }).ToList();
        var model = ml.RetriKT().SentenceEmbedding(encoder, secondInputColumnName: "Text2")
            .Append(ml.RetriKT().KnowledgeRetriever(store, k: 3))
            .Fit(ml.Data.LoadFromEnumerable(rows));

        rows[2].Text2 = " ";
        var e = Assert.Throws<InvalidOperationException>(() => model.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<int[]>("NeighborIds").ToList());
        Assert.Equal("SentenceEmbedding, row 2: this model reads sentence pairs (columns 'Text' and 'Text2'), so it needs a second text; found an empty one.", e.Message);
        // The same for a first text the tokenizer reads as nothing: it was encoded as [CLS] [SEP] b [SEP].
        rows[2].Text2 = rows[1].Text2;
        rows[2].Text = "\u200B";
        e = Assert.Throws<InvalidOperationException>(() => model.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<int[]>("NeighborIds").ToList());
        Assert.StartsWith("SentenceEmbedding, row 2: this model reads column 'Text', so it needs a text; found one of only whitespace", e.Message);
        using var engine = ml.Model.CreatePredictionEngine<PairRow, Neighbors>(model);
        e = Assert.Throws<InvalidOperationException>(() => engine.Predict(new PairRow { Text = rows[0].Text, Text2 = null }));
        Assert.EndsWith("this model reads sentence pairs (columns 'Text' and 'Text2'), so it needs a second text; found an empty one.", e.Message);

        // Rows with both texts are embedded as the store's pairs are.
        var both = rows.Where((_, i) => i != 2).ToList();
        var ids = model.Transform(ml.Data.LoadFromEnumerable(both)).GetColumn<int[]>("NeighborIds").ToList();
        for (int i = 0; i < both.Count; i++)
        {
            var query = new float[encoder.Dimension];
            encoder.Encode([(both[i].Text, both[i].Text2)], query);
            Assert.Equal(engine.Predict(both[i]).NeighborIds, ids[i]);
            Assert.Equal(store.Entries.Select((_, j) => j).OrderByDescending(j => Dot(query, store.Embedding(j))).First(), ids[i][0]);
        }
    }

    private static float Dot(float[] a, ReadOnlySpan<float> b)
    {
        float sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }
}
