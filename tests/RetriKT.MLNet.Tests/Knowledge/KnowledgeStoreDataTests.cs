using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>Reading a store view whose label names repeat: one line naming the column and the label, not a dictionary error.</summary>
public class KnowledgeStoreDataTests
{
    /// <summary>
    /// The Label column is read trimmed, as every label column is, and looked up among names that were not: a store whose
    /// label name ends in a space (a hand-written JSONL header) failed the round trip through its own view, which is the
    /// only form the student trainer takes a store in.
    /// </summary>
    [SharedDataFact]
    public void AStoreWhoseLabelNameEndsInASpaceRoundTripsThroughItsView_NamesThatDifferOnlyThereAreRefused()
    {
        var ml = new MLContext(seed: 1);
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"));
        var store = new KnowledgeStore(["negative ", " positive"], rows.Select(r => KnowledgeEntry.Gold(r.Text, null, int.Parse(r.Label), 2)));
        var back = KnowledgeStoreData.FromDataView(store.ToDataView(ml));
        Assert.Equal(store.LabelNames, back.LabelNames);
        Assert.Equal(store.Entries, back.Entries);

        var alike = new KnowledgeStore(["pos", "pos "], [KnowledgeEntry.Gold("a fine film", null, 0, 2), KnowledgeEntry.Gold("a great film", null, 1, 2)]);
        Assert.Equal("Knowledge store column 'SoftLabel': SlotNames name labels 'pos' and 'pos ', which differ only by white space at their ends; the 'Label' " +
                     "column is read without it, so its values could not tell them apart.",
            Assert.Throws<ArgumentException>(() => KnowledgeStoreData.FromDataView(alike.ToDataView(ml))).Message);
    }

    [Fact]
    public void SlotNamesOrGivenLabelNamesThatNameALabelTwiceAreRefused()
    {
        var ml = new MLContext(seed: 1);
        var rows = Enumerable.Range(0, 4).Select(i => new StoreRow { Text = $"t {i}", Label = i % 2 == 0 ? "a" : "b", SoftLabel = i % 2 == 0 ? [1, 0] : [0, 1] }).ToList();
        IDataView WithSlotNames(params string[] names)
        {
            var schema = SchemaDefinition.Create(typeof(StoreRow));
            schema[nameof(StoreRow.SoftLabel)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, names.Length);
            var slots = new VBuffer<ReadOnlyMemory<char>>(names.Length, names.Select(n => n.AsMemory()).ToArray());
            schema[nameof(StoreRow.SoftLabel)].AddAnnotation("SlotNames", slots, new VectorDataViewType(TextDataViewType.Instance, names.Length));
            return ml.Data.LoadFromEnumerable(rows, schema);
        }

        var twice = Assert.Throws<ArgumentException>(() => KnowledgeStoreData.FromDataView(WithSlotNames("a", "a")));
        Assert.Equal("Knowledge store column 'SoftLabel': SlotNames name label 'a' twice.", twice.Message);

        // Without SlotNames the given names label the slots; they are checked the same way.
        var plain = ml.Data.LoadFromEnumerable(rows);
        var given = Assert.Throws<ArgumentException>(() => KnowledgeStoreData.FromDataView(plain, ["b", "b"]));
        Assert.Equal("Knowledge store column 'SoftLabel': the label names given name label 'b' twice.", given.Message);

        // Distinct names read as before.
        Assert.Equal(["a", "b"], KnowledgeStoreData.FromDataView(WithSlotNames("a", "b")).LabelNames);
    }

    private sealed class StoreRow
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
        public float[] SoftLabel { get; set; } = [];
    }
}
