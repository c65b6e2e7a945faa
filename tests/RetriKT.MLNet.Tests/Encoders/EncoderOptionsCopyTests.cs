using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// An encoder keeps the settings it was loaded with. Both encoders kept the caller's Options object and read
/// <c>Normalize</c> (and the managed one its thread count, the TorchSharp one its batch size) at every call, so a
/// caller that changed or reused the object to load another encoder changed the first one's embeddings too, while its
/// fingerprint (and a saved model's normalisation) still named the settings it was loaded with.
/// </summary>
public class EncoderOptionsCopyTests
{
    private static string TinyBert => SharedData.Path("models", "hf-tiny-random-bert");

    private static List<string> Sentences() => TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(6).Select(r => r.Text).ToList();

    [SharedDataFact]
    public void TheManagedEncoderKeepsItsSettingsWhenTheCallerChangesTheOptionsAfterwards()
    {
        var sentences = Sentences();
        var options = new ManagedBertSentenceEncoder.Options();
        var encoder = ManagedBertSentenceEncoder.Load(TinyBert, options);
        var before = encoder.Embed(sentences);

        // The caller reuses its options for another encoder, unnormalised and on one thread.
        options.Normalize = false;
        options.MaxDegreeOfParallelism = 0;
        var unnormalised = ManagedBertSentenceEncoder.Load(TinyBert, new ManagedBertSentenceEncoder.Options { Normalize = false });

        Assert.True(encoder.Normalize);
        Assert.Equal(before, encoder.Embed(sentences));
        Assert.Equal(ManagedBertSentenceEncoder.Load(TinyBert).Fingerprint, encoder.Fingerprint);
        Assert.NotEqual(unnormalised.Fingerprint, encoder.Fingerprint);
    }

    [SharedDataFact]
    public void TheTorchEncoderKeepsItsSettingsWhenTheCallerChangesTheOptionsAfterwards()
    {
        var sentences = Sentences();
        var ml = new MLContext(seed: 1);
        var options = new BertSentenceEncoder.Options();
        using var encoder = BertSentenceEncoder.Load(ml, TinyBert, options);
        var before = encoder.Embed(sentences);

        options.Normalize = false;
        Assert.Equal(before, encoder.Embed(sentences));
        foreach (var row in encoder.Embed(sentences))
            Assert.Equal(1, Math.Sqrt(row.Sum(v => (double)v * v)), 5);

        // A directory it writes reloads as the encoder it is (normalised), not as the changed options say.
        using var folder = new TempDir("retrikt-encoder-options-");
        encoder.SaveHuggingFaceDirectory(folder.Path);
        Assert.True(ManagedBertSentenceEncoder.Load(folder.Path).Normalize);
    }
}
