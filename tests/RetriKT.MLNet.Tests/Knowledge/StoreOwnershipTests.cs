using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>A store's soft labels are its own: what the caller does with its arrays afterwards changes nothing.</summary>
public class StoreOwnershipTests
{
    private sealed class QueryRow
    {
        [VectorType(2)]
        public float[] Features { get; set; } = [];
    }

    [Fact]
    public void ASoftLabelArrayChangedAfterBuildingTheStoreChangesNothingInIt()
    {
        // One array filled and reused for every entry, as a loop over teacher outputs would.
        var buffer = new float[2];
        var entries = new List<KnowledgeEntry>();
        float[][] values = [[0.9f, 0.1f], [0.3f, 0.7f], [0.6f, 0.4f]];
        foreach (var v in values)
        {
            v.CopyTo(buffer, 0);
            entries.Add(new KnowledgeEntry($"text {entries.Count}", null, v[0] > v[1] ? 0 : 1, buffer, v.Max(), KnowledgeSource.Generated));
        }
        var store = new KnowledgeStore(["a", "b"], entries).WithEmbeddings([1, 0, 0, 1, 0.6f, 0.8f], 2);
        buffer[0] = 0.5f; buffer[1] = 0.5f;

        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal(values[i], store.Entries[i].SoftLabel);
            Assert.Equal(values[i], store.SoftLabel(i).ToArray());
        }

        using var folder = new TempDir("retrikt-ownership-");
        var path = Path.Combine(folder.Path, "store.bin");
        store.Save(path);
        var loaded = KnowledgeStore.Load(path);
        Assert.Equal(store.Entries, loaded.Entries);
        Assert.Equal(values.SelectMany(v => v), loaded.SoftLabels.ToArray());
        var jsonl = Path.Combine(folder.Path, "store.jsonl");
        store.ExportJsonl(jsonl);
        Assert.Equal(store.Entries, KnowledgeStore.ImportJsonl(jsonl).Entries);

        var ml = new MLContext(seed: 1);
        var queries = ml.Data.LoadFromEnumerable(new[] { new QueryRow { Features = [1, 0] }, new QueryRow { Features = [0, 1] } });
        var output = ml.RetriKT().KnowledgeRetriever(store, k: 1).Fit(queries).Transform(queries);
        var soft = output.GetColumn<VBuffer<float>>("NeighborSoftLabels").Select(v => v.DenseValues().ToArray()).ToList();
        Assert.Equal(values[0], soft[0]);
        Assert.Equal(values[1], soft[1]);

        // Changing the array given to `with` after the fact changes nothing either.
        var given = new float[] { 0.2f, 0.8f };
        var changed = store.Entries[0] with { SoftLabel = given };
        given[1] = 0;
        Assert.Equal([0.2f, 0.8f], changed.SoftLabel);
    }

    [Fact]
    public void EntriesWithEqualContentsAreEqualWhateverArraysTheyWereMadeFrom()
    {
        var a = new KnowledgeEntry("x", "y", 1, [0.25f, 0.75f], 0.75f, KnowledgeSource.Generated);
        var b = new KnowledgeEntry("x", "y", 1, [0.25f, 0.75f], 0.75f, KnowledgeSource.Generated);
        Assert.NotSame(a.SoftLabel, b.SoftLabel);
        Assert.Equal(a, b);
        Assert.True(a == b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.Single(new HashSet<KnowledgeEntry> { a, b });

        Assert.NotEqual(a, b with { SoftLabel = [0.5f, 0.5f] });
        Assert.NotEqual(a, b with { Text = "X" });
        Assert.NotEqual(a, b with { Text2 = null });
        Assert.NotEqual(a, b with { Label = 0 });
        Assert.NotEqual(a, b with { Fidelity = 0.5f });
        Assert.NotEqual(a, b with { Source = KnowledgeSource.Imported });
        Assert.Equal(a, b with { });
        Assert.Equal(KnowledgeEntry.Gold("t", null, 1, 3), KnowledgeEntry.Gold("t", null, 1, 3));
        Assert.False(a.Equals(null));
    }
}
