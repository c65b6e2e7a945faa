using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// A model.zip that saves must load: the knowledge store inside it was read with <see cref="StoreReadLimits.Default"/>
/// (10,000 labels, 1 MiB per text), which a store can exceed while saving without a word, and a model.zip offers no way
/// to raise them, so a retriever of 10,001 labels, or a model whose store holds one long text, was saved and could
/// never be loaded again. A standalone store file still takes the default limits (they can be raised by the caller).
/// </summary>
public class StoreInModelZipLimitsTests
{
    private sealed class QueryRow
    {
        [VectorType(4)] public float[] Features { get; set; } = [];
    }

    private static KnowledgeStore Store(int labels, int entries, string? longText = null)
    {
        var rng = new Random(1);
        var list = Enumerable.Range(0, entries).Select(i => KnowledgeEntry.Gold(i == 0 && longText is not null ? longText : $"text {i}", null, i % labels, labels));
        var embeddings = Enumerable.Range(0, entries * 4).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        return new KnowledgeStore(Enumerable.Range(0, labels).Select(i => $"L{i}").ToArray(), list).WithEmbeddings(embeddings, 4);
    }

    [Theory]
    [InlineData(10_001, false)]
    [InlineData(2, true)]
    public void ARetrieverThatSavesLoads(int labels, bool longText)
    {
        using var dir = new TempDir();
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new QueryRow { Features = [1, 0.5f, 0, 0] } });
        var store = Store(labels, 8, longText ? new string('a', (1 << 20) + 1) : null);
        var model = ml.RetriKT().KnowledgeRetriever(store, new KnowledgeRetrieverEstimator.Options { K = 3, NeighborTextsColumnName = "NeighborTexts" }).Fit(data);
        var path = dir.File("model.zip");
        ml.Model.SaveAtomically(model, data.Schema, path);

        var loaded = Assert.IsType<KnowledgeRetrieverTransformer>(new MLContext().Model.LoadVerified(path, out _));
        Assert.Equal(labels, loaded.Store.LabelCount);
        Assert.Equal(store.Entries[0].Text, loaded.Store.Entries[0].Text);
        Assert.Equal(model.Transform(data).GetColumn<int[]>("NeighborIds").Single(), loaded.Transform(data).GetColumn<int[]>("NeighborIds").Single());
    }

    [SharedDataFact]
    public void AStudentWhoseStoreHoldsALongTextLoads()
    {
        using var dir = new TempDir();
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            Epochs = 1, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, NeighborCount = 4, Seed = 3,
        }).Fit(train);
        var added = new KnowledgeStore(student.LabelNames, [KnowledgeEntry.Gold("a long review " + new string('x', 1 << 20), null, 0, 2)]);
        using var grown = student.WithAddedKnowledge(added);
        var path = dir.File("model.zip");
        ml.Model.SaveAtomically(grown, train.Schema, path);

        var loaded = Assert.IsType<RetrievalClassifierTransformer>(new MLContext().Model.LoadVerified(path, out _));
        Assert.Equal(grown.Store.Count, loaded.Store.Count);
        Assert.Equal(grown.Predict("a fine film").Scores, loaded.Predict("a fine film").Scores);
        student.Dispose();
        loaded.Dispose();
    }

    [Fact]
    public void AStoreFileOverTheDefaultLimitsSaysWhichLimitToRaise()
    {
        using var dir = new TempDir();
        var path = dir.File("store.bin");
        Store(10_001, 4).Save(path);
        var e = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Load(path));
        Assert.EndsWith("label count 10001 is outside [2, 10000] (for a file you trust, raise StoreReadLimits.MaxLabels).", e.Message);
        Assert.Equal(10_001, KnowledgeStore.Load(path, new StoreReadLimits { MaxLabels = 10_001 }).LabelCount);
        Store(2, 4, new string('a', (1 << 20) + 1)).Save(path);
        Assert.EndsWith("(for a file you trust, raise StoreReadLimits.MaxStringBytes).", Assert.Throws<InvalidDataException>(() => KnowledgeStore.Load(path)).Message);
    }

    [Fact]
    public void AHeaderAnnouncingMoreLabelNamesThanBytesFailsBeforeAllocatingThem()
    {
        using var ms = new MemoryStream();
        Store(2, 4).Write(ms);
        var bytes = ms.ToArray();
        BitConverter.GetBytes(0).CopyTo(bytes, 16);            // no entries
        BitConverter.GetBytes(int.MaxValue - 1).CopyTo(bytes, 20); // labels
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Read(new MemoryStream(bytes), StoreReadLimits.ForPart(bytes.Length)));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "a tampered label count must not allocate");
        Assert.Contains("bytes remain", e.Message);
    }
}
