using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A disposed TorchSharp sentence encoder refuses every use that needs its weights. Dispose freed the module and nothing
/// more: <c>SaveHuggingFaceDirectory</c> then wrote a directory whose model.safetensors held no tensor (40 bytes, beside
/// a full config.json and vocab.txt), <c>ParameterCount</c> said 0, and Embed failed with a bare "Cannot access a
/// disposed object." that named no object.
/// </summary>
public class DisposedEncoderTests
{
    [SharedDataFact]
    public void ADisposedTorchEncoderThrowsObjectDisposedExceptionAndWritesNothing()
    {
        var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), SharedData.Path("models", "hf-tiny-random-bert"));
        Assert.Single(encoder.Embed(["a charming and often affecting journey"]));
        encoder.Dispose();

        void AssertDisposed(Action use) => Assert.Equal(nameof(BertSentenceEncoder), Assert.Throws<ObjectDisposedException>(use).ObjectName);
        AssertDisposed(() => encoder.Embed(["a charming and often affecting journey"]));
        AssertDisposed(() => encoder.Encode([("a charming journey", "unflinchingly bleak")], new float[64]));
        AssertDisposed(() => _ = encoder.ParameterCount);
        using var folder = new TempDir("retrikt-disposed-encoder-");
        AssertDisposed(() => encoder.SaveHuggingFaceDirectory(folder.Path));
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder.Path));
        encoder.Dispose(); // idempotent
    }

    /// <summary>
    /// Dispose freed the module whatever another thread was doing with it: an encoder dropped while a store was being
    /// encoded (a reload under load) freed the weights under that thread's forward pass. Dispose now waits for the
    /// encodings in flight, and each either finishes with the right embeddings or is refused naming the encoder.
    /// </summary>
    [SharedDataFact]
    public void DisposeWaitsForAnEncodingInFlight()
    {
        var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), SharedData.Path("models", "hf-tiny-random-bert"));
        string[] texts = ["a charming and often affecting journey", "unflinchingly bleak and desperate", "it 's a cookie-cutter movie"];
        var expected = encoder.Embed(texts);
        using var started = new ManualResetEventSlim();
        int encoded = 0;
        var inFlight = Task.Run(() =>
        {
            for (int i = 0; i < 100_000; i++)
            {
                var got = encoder.Embed(texts);
                for (int t = 0; t < texts.Length; t++) Assert.Equal(expected[t], got[t]);
                encoded++;
                started.Set();
            }
        });
        Assert.True(started.Wait(TimeSpan.FromMinutes(1)), "no encoding finished");
        encoder.Dispose();
        var refused = Assert.Throws<ObjectDisposedException>(() => inFlight.GetAwaiter().GetResult());
        Assert.Equal(nameof(BertSentenceEncoder), refused.ObjectName);
        Assert.InRange(encoded, 1, 99_999);
    }
}
