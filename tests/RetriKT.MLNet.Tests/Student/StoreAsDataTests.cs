using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>The knowledge store reaches the RetrievalClassifier trainer as an IDataView: lossless, and bad views fail clearly.</summary>
public class StoreAsDataTests
{
    private static RetrievalClassifierTrainer.Options Tiny() => new()
    {
        HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 6, BatchSize = 8, LearningRate = 5e-3, TeacherParameterCount = 1_000_000,
    };

    /// <summary>A store with everything a real one has: generated and gold entries, soft labels, fidelities, sources.</summary>
    private static KnowledgeStore Store()
    {
        var entries = RetrievalClassifierBehaviourTests.Synthetic(30, 7).Select((r, i) =>
        {
            int label = r.Label == "pos" ? 1 : 0;
            float p = 0.55f + 0.4f * (i % 5) / 4;
            float[] soft = label == 1 ? [1 - p, p] : [p, 1 - p];
            return i % 6 == 0 ? KnowledgeEntry.Gold(r.Text, null, label, 2)
                : new KnowledgeEntry(r.Text, null, label, soft, soft[label], i % 4 == 0 ? KnowledgeSource.Imported : KnowledgeSource.Generated);
        });
        return new KnowledgeStore(["neg", "pos"], entries);
    }

    [Fact]
    public void AStoreViewTrainsTheSameModelAsTheStoreObject()
    {
        var ml = new MLContext(seed: 1);
        var store = Store();
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(16, 8));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var train = keyMap.Transform(data);
        var test = keyMap.Transform(ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(24, 9)));

        var view = store.ToDataView(ml);
        var back = KnowledgeStoreData.FromDataView(view);
        Assert.Equal(store.LabelNames, back.LabelNames);
        Assert.Equal(store.Entries.Count, back.Entries.Count);
        for (int i = 0; i < store.Count; i++)
        {
            var (a, b) = (store.Entries[i], back.Entries[i]);
            Assert.Equal((a.Text, a.Text2, a.Label, a.Fidelity, a.Source), (b.Text, b.Text2, b.Label, b.Fidelity, b.Source));
            Assert.Equal(a.SoftLabel, b.SoftLabel);
        }

        var fromObject = Tiny();
#pragma warning disable CS0618 // the obsolete object path is what the data path must reproduce
        fromObject.Store = store;
#pragma warning restore CS0618
        var fromData = Tiny();
        fromData.StoreData = view;
        using var expected = ml.MulticlassClassification.Trainers.RetrievalClassifier(fromObject).Fit(train);
        using var actual = ml.MulticlassClassification.Trainers.RetrievalClassifier(fromData).Fit(train);
        Assert.Equal(Scores(expected, test), Scores(actual, test)); // bit-identical, not approximately
        Assert.Equal(expected.Store.Embeddings.ToArray(), actual.Store.Embeddings.ToArray());
        Assert.Equal((expected.RetrievalWeight, expected.Temperature), (actual.RetrievalWeight, actual.Temperature));

        // A view without SlotNames (brought from elsewhere) takes the training label names; a filtered view trains as a smaller store.
        var plain = ml.Data.LoadFromEnumerable(ml.Data.CreateEnumerable<KnowledgeRowFixed>(view, reuseRowObject: false));
        Assert.Equal(store.Count, KnowledgeStoreData.FromDataView(plain, ["neg", "pos"]).Count);
        var confident = ml.Data.FilterRowsByColumn(view, "Fidelity", lowerBound: 0.8);
        var filtered = Tiny();
        filtered.StoreData = confident;
        using var smaller = ml.MulticlassClassification.Trainers.RetrievalClassifier(filtered).Fit(train);
        int kept = store.Entries.Count(e => e.Fidelity >= 0.8);
        Assert.InRange(smaller.Store.Count, kept, kept + 16);

        // Both paths at once is a mistake, said when the trainer is made.
        var both = Tiny();
        both.StoreData = view;
#pragma warning disable CS0618
        both.Store = store;
#pragma warning restore CS0618
        Assert.Contains("not both", Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(both)).Message);
    }

    [Fact]
    public void BadStoreViewsFailWithTheColumnTheExpectedTypeAndTheRow()
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(12, 10);
        var train = ml.Data.LoadFromEnumerable(rows);
        string Fails(IDataView store)
        {
            var options = Tiny();
            options.StoreData = store;
            return Assert.ThrowsAny<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(train)).Message;
        }
        IDataView View(params KnowledgeRowFixed[] r) => ml.Data.LoadFromEnumerable(r);
        KnowledgeRowFixed Row(string label, params float[] soft) => new() { Text = "a good film", Label = label, SoftLabel = soft, Fidelity = 1, Source = "Generated" };

        var three = Fails(ml.Data.LoadFromEnumerable(new[] { new ThreeSlots { Text = "a", Label = "pos", SoftLabel = [0.2f, 0.3f, 0.5f] } }));
        Assert.Contains("column 'SoftLabel'", three);
        Assert.Contains("2 values", three);
        Assert.Contains("Vector<Single, 3>", three);

        var negative = Fails(View(Row("pos", 0, 1), Row("neg", 1.5f, -0.5f)));
        Assert.Contains("column 'SoftLabel', row 1", negative);
        Assert.Contains("-0.5", negative);
        Assert.Contains("column 'SoftLabel', row 0", Fails(View(Row("pos", float.NaN, 1))));
        Assert.Contains("sum to 0.5", Fails(View(Row("pos", 0.25f, 0.25f))));

        var unknown = Fails(View(Row("pos", 0, 1), Row("maybe", 0.5f, 0.5f)));
        Assert.Contains("column 'Label', row 1", unknown);
        Assert.Contains("'maybe'", unknown);
        var badSource = ml.Data.LoadFromEnumerable(new[] { new KnowledgeRowFixed { Text = "x", Label = "neg", SoftLabel = [1, 0], Source = "Teacher" } });
        Assert.Contains("column 'Source', row 0: 'Teacher' is not one of FewShot, Generated, Imported", Fails(badSource));

        var noSoft = Fails(ml.Data.LoadFromEnumerable(rows));
        Assert.Contains("column 'SoftLabel' (a vector of Single) not found", noSoft);
        var textAsNumber = Fails(ml.Data.LoadFromEnumerable(new[] { new { Text = 1f, Label = "pos", SoftLabel = new float[] { 0, 1 } } }));
        Assert.Contains("column 'Text': expected String, found Single", textAsNumber);
    }

    /// <summary>
    /// A store entry whose text holds no word character (whitespace, a zero-width space) trained as [CLS] [SEP] with its
    /// label and stayed in the store as a neighbour, where a training row of the same text is skipped and the runtime
    /// refuses it as a query. It is left out now, with a warning naming the entry, as such training rows are.
    /// </summary>
    [Theory]
    [InlineData("   ")]
    [InlineData("\u200B")]
    public void AStoreEntryOfNoWordCharacterIsLeftOutWithAWarning(string blank)
    {
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.RawMessage); };
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1);
        var entries = Store().Entries.ToList();
        entries.Insert(3, new KnowledgeEntry(blank, null, 1, [0.1f, 0.9f], 0.9f, KnowledgeSource.Generated));
        var options = Tiny();
        (options.StoreData, options.StoreValidationShare) = (new KnowledgeStore(["neg", "pos"], entries).ToDataView(ml), 0);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows));
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyMap.Transform(ml.Data.LoadFromEnumerable(rows)));
        Assert.Contains($"Knowledge store: 1 entries have no text or one of no word character (only whitespace, control or zero-width characters, combining " +
                        $"marks), which the student would train as an empty input, and were left out (the first: entry 3, '{blank}' labelled 'pos').", warnings);
        Assert.DoesNotContain(student.Store.Entries, e => e.Text == blank);
        int added = rows.Select(r => r.Text).Distinct().Count(t => !entries.Any(e => e.Text == t)); // training rows the store absorbs as gold entries
        Assert.Equal(entries.Count - 1 + added, student.Store.Count);
    }

    /// <summary>A store row without SlotNames on SoftLabel: what a view brought from elsewhere looks like.</summary>
    private sealed class KnowledgeRowFixed
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
        public string Label { get; set; } = "";
        [VectorType(2)] public float[] SoftLabel { get; set; } = [];
        public float Fidelity { get; set; }
        public string Source { get; set; } = "";
    }

    private sealed class ThreeSlots
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
        [VectorType(3)] public float[] SoftLabel { get; set; } = [];
    }

    private static float[][] Scores(ITransformer model, IDataView data)
        => model.Transform(data).GetColumn<float[]>("Score").ToArray();
}
