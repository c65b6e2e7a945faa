using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <c>StoreValidationShare</c> holds out generated entries so that λ, μ, τ and the epoch are chosen on text the student
/// never trained on. Two kinds of entry broke that: one of two entries with the same text (a store of real sentences
/// has them: SST-2's train.tsv repeats 371 texts), whose twin stayed in the store, so the validation row was trained
/// on and retrieved itself at cosine 1; and an entry whose text is also a training row, which the store had absorbed
/// (the row adds nothing new), so the user's gold row left training and validated under the teacher's label.
/// </summary>
public class StoreHoldOutLeakTests
{
    [Fact]
    public void NeitherARepeatedTextNorATrainingRowsTextIsHeldOut()
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(20, 1);
        var generated = RetrievalClassifierBehaviourTests.Synthetic(60, 2).Select(r => r.Text).Distinct().Except(rows.Select(r => r.Text)).Take(40).ToList();
        var repeated = generated.Take(10).ToHashSet();
        KnowledgeEntry Entry(string text, bool positive) =>
            new(text, null, positive ? 1 : 0, positive ? [0.2f, 0.8f] : [0.7f, 0.3f], 0.8f, KnowledgeSource.Imported);
        var entries = generated.Select((t, i) => Entry(t, i % 2 == 0))
            .Concat(repeated.Select((t, i) => Entry(t, i % 2 == 0)))                 // the same texts again
            .Concat(rows.Select(r => Entry(r.Text, r.Label == "pos")))               // the training rows' texts, as store entries
            .ToList();
        var store = new KnowledgeStore(["neg", "pos"], entries);
        var options = new RetrievalClassifierTrainer.Options
        {
            StoreData = store.ToDataView(ml), StoreValidationShare = 0.6, HiddenSize = 8, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 1, Seed = 2,
        };
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyed);

        var kept = student.Store.Entries.GroupBy(e => e.Text!).ToDictionary(g => g.Key, g => g.Count());
        Assert.All(rows, r => Assert.True(kept.ContainsKey(r.Text), $"training row '{r.Text}' left the store"));
        Assert.All(repeated, t => Assert.Equal(2, kept.GetValueOrDefault(t)));          // a repeated text stays whole
        Assert.True(student.Store.Count < store.Count, "the other entries are still held out");
    }
}
