using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// A store whose embeddings pass 2 GiB (1.4 million entries of 384 floats, as a MiniLM-keyed store of that size holds)
/// fits in memory, but its embeddings were written and read as one span of bytes, which holds at most int.MaxValue:
/// saving it threw a bare OverflowException ("Arithmetic operation resulted in an overflow"), so hours of extraction
/// could not be kept; and a model.zip part was read whole into one byte array, so a retriever or student with such a
/// store saved and then failed to load as "damaged or was modified". Each test needs about 4.5 GB of memory for a minute.
/// </summary>
public class LargeStoreTests
{
    private const int Count = 1_400_000, Dim = 384;

    private sealed class QueryRow
    {
        [VectorType(Dim)] public float[] Features { get; set; } = [];
    }

    [Fact]
    public void AStoreWhoseEmbeddingsPassTwoGibibytesSavesAndLoads()
    {
        const int count = Count, dim = Dim;
        var store = LargeStore();

        using var folder = new TempDir("retrikt-large-store-");
        var path = folder.File("store.bin");
        store.Save(path);
        Assert.Equal((long)count * dim * sizeof(float), new FileInfo(path).Length - HeaderAndEntriesLength(count));
        store = null;
        var loaded = KnowledgeStore.Load(path);
        Assert.Equal((count, dim), (loaded.Count, loaded.Dimension));
        foreach (int i in new[] { 0, 1, count / 2 + 7, count - 1 })
        {
            Assert.Equal(1f, loaded.Embedding(i)[i % dim]);
            Assert.Equal(1f, loaded.Embedding(i).ToArray().Sum());
            Assert.Equal(i % 2, loaded.Entries[i].Label);
        }
    }

    [Fact]
    public void ARetrieverWhoseStorePassesTwoGibibytesLoadsFromModelZip()
    {
        var ml = new MLContext(seed: 1);
        var query = new float[Dim];
        query[5] = 1;
        var data = ml.Data.LoadFromEnumerable(new[] { new QueryRow { Features = query } });
        using var folder = new TempDir("retrikt-large-store-");
        var path = folder.File("model.zip");
        ml.Model.SaveAtomically(ml.RetriKT().KnowledgeRetriever(LargeStore(), new KnowledgeRetrieverEstimator.Options { K = 3, Index = RetrieverIndexKind.Exact }).Fit(data),
            data.Schema, path);

        using var loaded = Assert.IsType<KnowledgeRetrieverTransformer>(ml.Model.LoadVerified(path, out _));
        Assert.Equal((Count, Dim), (loaded.Store.Count, loaded.Store.Dimension));
        var ids = loaded.Transform(data).GetColumn<int[]>("NeighborIds").Single();
        Assert.All(ids, id => Assert.Equal(5, id % Dim)); // the entries whose one-hot row is the query's
        Assert.Equal(1f, loaded.Store.Embedding(Count - 1)[(Count - 1) % Dim]);
    }

    private static KnowledgeStore LargeStore()
    {
        Assert.True((long)Count * Dim * sizeof(float) > int.MaxValue);
        var entries = new KnowledgeEntry[Count];
        for (int i = 0; i < Count; i++) entries[i] = new KnowledgeEntry(null, null, i % 2, i % 2 == 0 ? [0.9f, 0.1f] : [0.2f, 0.8f], 1f, KnowledgeSource.Generated);
        return new KnowledgeStore(["neg", "pos"], entries).WithEmbeddings(OneHotRows(Count, Dim), Dim);
    }

    /// <summary>Row i holds a 1 at column i mod <paramref name="dim"/>: unit length, and a different row for each neighbour.</summary>
    private static float[] OneHotRows(int count, int dim)
    {
        var rows = new float[(long)count * dim];
        for (int i = 0; i < count; i++) rows[(long)i * dim + i % dim] = 1;
        return rows;
    }

    /// <summary>The bytes of a version 1 store file around its embeddings: header, the two label names, entries of 2 labels, checksum.</summary>
    private static long HeaderAndEntriesLength(int count) => 8 + 4 + 4 + 12 + 2 * (4 + 3) + (long)count * (4 + 1 + 4 + 8) + 8;
}
