using System.IO.Compression;
using Microsoft.ML;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// model.zip written here is restored by a plain <c>mlContext.Model.Load</c> in another OS process, through Transform,
/// PredictionEngine and a re-save, with identical outputs. Removing the bridge (IgnoresAccessChecksTo, the
/// LoadableClass registration or the publicized references) breaks this test.
/// </summary>
public class CrossProcessRoundTripTests
{
    [SharedDataFact]
    public void TokenizerInsideAnMlNetPipelineRoundTripsAcrossProcesses()
    {
        var mlContext = new MLContext(seed: 1);
        var train = TestData.Sst2Train(mlContext);
        var pipeline = mlContext.Transforms.Text.NormalizeText("Text", "Text", keepPunctuations: true)
            .Append(mlContext.RetriKT().TextTokenizer(maxLength: 16));
        var model = pipeline.Fit(train);
        var dev = mlContext.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv")));

        using var result = CrossProcess.RoundTrip(mlContext, model, dev, engineContract: "text-tokens");

        Assert.Contains(typeof(TextTokenizingTransformer).FullName!, result.LoadedTypes);
        Assert.Equal(33, result.Transform.Count); // header + 32 dev rows
        using var zip = ZipFile.OpenRead(result.ModelPath);
        Assert.Contains(zip.Entries, e => e.FullName.EndsWith("Vocabulary.txt", StringComparison.Ordinal));
    }

    [Fact]
    public void AStandaloneTransformerRoundTripsAndCorruptStateIsReportedByName()
    {
        var mlContext = new MLContext(seed: 1);
        var rows = new[] { "alpha beta gamma", "beta gamma delta", "gamma alpha" }.Select(t => new TextRow { Text = t }).ToList();
        var data = mlContext.Data.LoadFromEnumerable(rows);
        var model = mlContext.RetriKT().TextTokenizer(new TextTokenizingEstimator.Options { MaxLength = 6, MinWordFrequency = 1 }).Fit(data);
        using var result = CrossProcess.RoundTrip(mlContext, model, data, engineContract: "text-tokens");
        Assert.Equal(4, result.Transform.Count);

        // Drop the vocabulary stream: loading must fail and say which stream is missing.
        var broken = Path.Combine(Path.GetDirectoryName(result.ModelPath)!, "broken.zip");
        File.Copy(result.ModelPath, broken);
        using (var zip = ZipFile.Open(broken, ZipArchiveMode.Update))
            zip.Entries.First(e => e.FullName.EndsWith("Vocabulary.txt", StringComparison.Ordinal)).Delete();
        var error = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(broken, out _));
        Assert.Contains("Vocabulary.txt", Flatten(error));
    }

    private static string Flatten(Exception e) => e.InnerException is null ? e.Message : e.Message + " | " + Flatten(e.InnerException);
}
