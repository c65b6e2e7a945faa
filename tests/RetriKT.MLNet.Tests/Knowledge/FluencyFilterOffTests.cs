using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>The fluency filter can be turned off: the extraction then keeps samples without scoring their fluency.</summary>
public sealed class FluencyFilterOffTests
{
    [SharedDataFact]
    public void ExtractionWithTheFluencyFilterOffKeepsSamplesInsteadOfFailing()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2,
        }).Fit(data);
        var extraction = mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 3, BatchSize = 4, MaxAttemptsFactor = 4, FidelityThreshold = 0, RequireArgmax = false,
            MinWords = 3, FluencyFilter = false, Seed = 9,
        }).Fit(data);
        var report = extraction.Report!;
        Assert.Equal(0, report.Dropped[DropReason.Disfluent]);
        Assert.Equal(TimeSpan.Zero, report.Times!.Fluency);
        Assert.True(report.Kept.Values.Sum() > 0, $"kept nothing: {report}");
    }
}
