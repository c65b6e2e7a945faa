using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Student;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// A store view without SlotNames (saved as text and read back) takes its label order from the caller; read in another
/// order than it was written in, it fails instead of training a student on every entry's swapped probabilities.
/// </summary>
public class StoreWithoutSlotNamesTests
{
    private sealed class StoreRow
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
        [VectorType(2)] public float[] SoftLabel { get; set; } = [];
    }

    /// <summary>A [neg, pos] store as the extractor writes it, without its SlotNames.</summary>
    private static IDataView Store(MLContext ml) => ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(200, 5).Select(r => new StoreRow
    {
        Text = r.Text, Label = r.Label, SoftLabel = r.Label == "pos" ? [0.1f, 0.9f] : [0.9f, 0.1f],
    }));

    [Fact]
    public void ReadInItsOwnOrderItLoads_InAnotherItFailsNamingTheColumnAndARow()
    {
        var ml = new MLContext(seed: 1);
        Assert.Equal(200, KnowledgeStoreData.FromDataView(Store(ml), ["neg", "pos"]).Count);
        var error = Assert.Throws<ArgumentException>(() => KnowledgeStoreData.FromDataView(Store(ml), ["pos", "neg"]));
        // A teacher that ranks 'pos' first on most rows of both labels is a poor teacher, not another order: it loads.
        var biased = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(20, 5).Select(r => new StoreRow { Text = r.Text, Label = r.Label, SoftLabel = [0.3f, 0.7f] }));
        Assert.Equal(20, KnowledgeStoreData.FromDataView(biased, ["neg", "pos"]).Count);
        Assert.Equal("Knowledge store column 'SoftLabel' has no SlotNames, and read in the label order [pos, neg] 100 of the 100 rows labelled 'pos' in " +
                     "column 'Label' give label 'neg' the highest probability (the first: row 0, SoftLabel [0.1, 0.9]); the slots are in another order than these names, " +
                     "or the store teaches every label as another. Give the store with its SlotNames (ToDataView, SaveAsBinary).", error.Message);
    }

    private sealed class SourcedStoreRow
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
        [VectorType(2)] public float[] SoftLabel { get; set; } = [];
        public string Source { get; set; } = "";
    }

    [Fact]
    public void AStoreAtHalfFidelityIsToldByItsFewShotRows()
    {
        // SST-2's generated stores hold the intended label about half the time: read swapped, such a store looks like a
        // poor one. Its few-shot rows carry their gold label one-hot, so they tell the order at any fidelity.
        var ml = new MLContext(seed: 1);
        var random = new Random(3);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(200, 5).Select((r, i) => i < 8
            ? new SourcedStoreRow { Text = r.Text, Label = r.Label, SoftLabel = r.Label == "pos" ? [0f, 1f] : [1f, 0f], Source = "FewShot" }
            : new SourcedStoreRow { Text = r.Text, Label = r.Label, SoftLabel = random.Next(2) == 0 ? [0.6f, 0.4f] : [0.4f, 0.6f], Source = "Generated" }).ToList();
        Assert.Equal(200, KnowledgeStoreData.FromDataView(ml.Data.LoadFromEnumerable(rows), ["neg", "pos"]).Count);
        var error = Assert.Throws<ArgumentException>(() => KnowledgeStoreData.FromDataView(ml.Data.LoadFromEnumerable(rows), ["pos", "neg"]));
        Assert.Equal("Knowledge store column 'SoftLabel' has no SlotNames, and read in the label order [pos, neg] 8 of the 8 few-shot rows (gold labels, " +
                     "one-hot soft labels) give another label than theirs the highest probability (the first: row 0, label 'pos', SoftLabel [0, 1]); " +
                     "the slots are in another order than these names. Give the store with its SlotNames (ToDataView, SaveAsBinary).", error.Message);
    }

    [Fact]
    public void TheTrainerRefusesItWhenTheKeysAreInAnotherOrder()
    {
        var ml = new MLContext(seed: 1);
        // Training rows whose first label is "pos": MapValueToKey numbers [pos, neg], and the store is read in that order.
        // The student trained on it predicted the opposite label on all 100 test rows, without an error.
        var train = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(8, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 10, BatchSize = 8, LearningRate = 5e-3, StoreData = Store(ml),
        };
        var error = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyMap.Transform(train)));
        Assert.StartsWith("Knowledge store column 'SoftLabel' has no SlotNames, and read in the label order [pos, neg]", error.Message);
    }
}
