using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The intended-label share counts the samples the filters see as having text: for a pair template, a sample without its
/// second part is Empty to the filters and must not count (the teacher's label of "first part + separator + nothing" says
/// nothing about how faithful the prompts are).
/// </summary>
public sealed class IntendedLabelPairTests
{
    private static readonly TaskTemplate StoryPair = new()
    {
        Name = "StoryPair",
        Text2Column = "Text2",
        PairSeparator = " ### ",   // the stories260K teacher never writes '#', so no generated sample has a second part
        ClassificationFormat = "{text} ### {text2} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" },
        MaxNewTokens = 12,
    };

    [SharedDataFact]
    public void PairSamplesWithoutASecondPartAreNotCountedInTheIntendedLabelShare()
    {
        var mlContext = new MLContext(seed: 3);
        var data = mlContext.Data.LoadFromEnumerable(new[]
        {
            new TextPairRow { Text = "Lily was very happy.", Text2 = "She played with her ball in the sun.", Label = "happy" },
            new TextPairRow { Text = "Tom smiled.", Text2 = "He got a big red car for his birthday.", Label = "happy" },
            new TextPairRow { Text = "Ben was sad.", Text2 = "His toy broke and he cried.", Label = "sad" },
            new TextPairRow { Text = "Anna cried.", Text2 = "Her friend did not want to play.", Label = "sad" },
        });
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = StoryPair, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2,
        }).Fit(data);
        var report = mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 4, BatchSize = 4, MaxAttemptsFactor = 1, FidelityThreshold = 0, RequireArgmax = false,
            MinWords = 1, FluencyFilter = false, Seed = 5,
        }).Fit(data).Report!;

        int generated = report.Generated.Values.Sum();
        Assert.True(generated == 8 && report.Dropped[DropReason.Empty] == generated,
            $"precondition: every one of the 8 generated samples lacks its second part; found {report.Dropped[DropReason.Empty]} Empty of {generated}");
        // Nothing had both parts, so nothing was counted: the share is unmeasured, not the teacher's labels of the half
        // samples. It was 0, and the report read "generated with the intended teacher label 0.0 %": a teacher that ignores
        // every label, which nothing here showed.
        Assert.Null(report.IntendedLabelShare);
        Assert.DoesNotContain("intended teacher label", report.ToString());
    }
}
