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
}
