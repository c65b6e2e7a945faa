using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// LoadVerified takes the streams a plain Model.Load takes: a model read from a stream that cannot seek (an HTTP response,
/// a blob download, a GZipStream) loaded through Model.Load but failed through LoadVerified with a bare
/// "Specified method is not supported." naming nothing.
/// </summary>
public class LoadVerifiedStreamTests
{
    private sealed class QueryRow
    {
        [VectorType(4)] public float[] Features { get; set; } = [];
    }

    /// <summary>A read-only stream that cannot seek, as a network response is.</summary>
    private sealed class ForwardOnly(Stream inner) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public void AModelFromAStreamThatCannotSeekIsVerifiedAndLoaded()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new QueryRow { Features = [1, 0.5f, 0, 0] } });
        var store = new KnowledgeStore(["neg", "pos"], Enumerable.Range(0, 6).Select(i => KnowledgeEntry.Gold($"text {i}", null, i % 2, 2)))
            .WithEmbeddings(Enumerable.Range(0, 24).Select(i => (float)(i % 7 + 1)).ToArray(), 4);
        var model = ml.RetriKT().KnowledgeRetriever(store, k: 2).Fit(data);
        using var saved = new MemoryStream();
        ml.Model.Save(model, data.Schema, saved);
        var bytes = saved.ToArray();

        var loaded = Assert.IsType<KnowledgeRetrieverTransformer>(ml.Model.LoadVerified(new ForwardOnly(new MemoryStream(bytes)), "https://models/model.zip", out var schema));
        Assert.Equal("Features", Assert.Single(schema).Name);
        Assert.Equal(model.Transform(data).GetColumn<int[]>("NeighborIds").Single(), loaded.Transform(data).GetColumn<int[]>("NeighborIds").Single());

        // Damage is still found, and named, in a stream that cannot seek.
        var damaged = bytes[..(bytes.Length - 30)];
        var e = Assert.Throws<InvalidDataException>(() => ml.Model.LoadVerified(new ForwardOnly(new MemoryStream(damaged)), "https://models/model.zip", out _));
        Assert.StartsWith("https://models/model.zip: ", e.Message);
    }
}
