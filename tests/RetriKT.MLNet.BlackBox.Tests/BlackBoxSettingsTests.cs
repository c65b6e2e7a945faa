using Microsoft.ML;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>
/// Settings no run can succeed with are refused when the extractor is made, in one line naming the setting, before a
/// request is paid for; against the deterministic Kestrel teacher of <see cref="BlackBoxCheckpointTests"/>. No TorchSharp.
/// </summary>
public class BlackBoxSettingsTests
{
    /// <summary>
    /// The filters mean what the white-box extractor's do, and are refused where it refuses them. MaxWords below MinWords
    /// (the option's or the template's) or a negative NearDuplicateThreshold used to be accepted: the run spent every
    /// attempt of every label (two paid requests each) and dropped every sample, TooLong or NearDuplicate.
    /// </summary>
    [Fact]
    public async Task FilterSettingsNoSampleCouldPassAreRefusedBeforeARequest()
    {
        await using var server = await BlackBoxCheckpointTests.DeterministicTeacher();
        var url = server.Urls.Single();
        var ml = new MLContext(seed: 1);
        foreach (var (change, expected) in new (Action<BlackBoxExtractorOptions>, string)[]
        {
            (o => { o.MinWords = 3; o.MaxWords = 2; }, "MaxWords (2) must be >= MinWords (3): no sample could pass both."),
            (o => { o.MinWords = null; o.MaxWords = 2; }, "MaxWords (2) must be >= the MinWords of template 'StoryMood' (3): no sample could pass both."),
            (o => o.MinWords = 0, "MinWords must be >= 1 (or null for the template's), found 0."),
            (o => o.NearDuplicateThreshold = -0.5, "NearDuplicateThreshold must be in [0, 1] (1 turns the filter off), found -0.5."),
            (o => o.MaxAttemptsFactor = double.PositiveInfinity, "MaxAttemptsFactor must be a finite number >= 1, found Infinity."),
            // A blank context gave every sample drawn with it an empty first part: paid for, then dropped as Empty.
            (o => o.ContextTexts = ["Tom had a red ball.", ""], "ContextTexts[1] is empty; expected a first part for the teacher to write a second part after."),
        })
        {
            var options = BlackBoxCheckpointTests.Options(url, null, perLabel: 2);
            change(options);
            var error = Assert.Throws<ArgumentOutOfRangeException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(options));
            Assert.Equal(expected, error.Message);
        }
        // The same endpoint and settings within range: the run keeps what it asks for.
        var run = ml.RetriKT().BlackBoxKnowledgeExtractor(BlackBoxCheckpointTests.Options(url, null, perLabel: 2)).Fit(BlackBoxExtractionTests.StoryData(ml));
        Assert.Equal(4, run.Report.Extraction.Kept.Values.Sum());
    }

    /// <summary>
    /// Request settings out of range are refused when the extractor is made, in one line. They used to reach Polly at Fit,
    /// after the checkpoint was opened, and fail there in a multi-line ValidationException (a zero RequestTimeout, a
    /// negative RetryDelay, a MaxRetryDelay over a day such as TimeSpan.MaxValue for "no cap"), or the JSON writer (a NaN temperature); Timeout.InfiniteTimeSpan, the docs' advice for the
    /// OpenAI client's own NetworkTimeout, failed the same way as a RequestTimeout and now means no limit.
    /// </summary>
    [Fact]
    public async Task RequestSettingsOutOfRangeAreOneLineWhenMade_AndAnInfiniteRequestTimeoutMeansNoLimit()
    {
        await using var server = await BlackBoxCheckpointTests.DeterministicTeacher();
        var url = server.Urls.Single();
        var ml = new MLContext(seed: 1);
        foreach (var (change, expected) in new (Action<BlackBoxExtractorOptions>, string)[]
        {
            (o => o.RequestTimeout = TimeSpan.Zero, "RequestTimeout must be between 10 ms and 1 day (or Timeout.InfiniteTimeSpan for no limit), found 00:00:00."),
            (o => o.RetryDelay = TimeSpan.FromMilliseconds(-5), "RetryDelay must be between 0 and 1 day, found -00:00:00.0050000."),
            (o => o.MaxRetryDelay = TimeSpan.FromSeconds(-1), "MaxRetryDelay must be between 0 and 1 day, found -00:00:01."),
            (o => o.MaxRetryDelay = TimeSpan.MaxValue, "MaxRetryDelay must be between 0 and 1 day, found 10675199.02:48:05.4775807."),
            (o => o.Temperature = float.NaN, "Temperature must be a finite number >= 0, found NaN."),
            (o => o.TemperatureJitter = -0.1f, "TemperatureJitter must be a finite number >= 0, found -0.1."),
            (o => o.TopP = 0, "TopP must be in (0, 1] (or null for the endpoint's default), found 0."),
            (o => o.MaxOutputTokens = 0, "MaxOutputTokens must be >= 1 (or null for the template's MaxNewTokens), found 0."),
            (o => o.ClassificationMaxTokens = 0, "ClassificationMaxTokens must be >= 1, found 0."),
        })
        {
            var options = BlackBoxCheckpointTests.Options(url, null, perLabel: 2);
            change(options);
            var error = Assert.Throws<ArgumentOutOfRangeException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(options));
            Assert.Equal(expected, error.Message);
        }
        var unlimited = BlackBoxCheckpointTests.Options(url, null, perLabel: 2);
        unlimited.RequestTimeout = Timeout.InfiniteTimeSpan;
        var run = ml.RetriKT().BlackBoxKnowledgeExtractor(unlimited).Fit(BlackBoxExtractionTests.StoryData(ml));
        Assert.Equal(4, run.Report.Extraction.Kept.Values.Sum());
    }

    /// <summary>
    /// The request cap SamplesPerLabel × MaxAttemptsFactor was rounded up in floating point: 100 × 1.1 is
    /// 110.00000000000001, and a label whose samples were all dropped got 111 generation requests, not 110.
    /// </summary>
    [Fact]
    public async Task TheRequestCapIsTheProductOfTheSettingsNotItsFloatingPointError()
    {
        await using var server = await BlackBoxCheckpointTests.DeterministicTeacher();
        var ml = new MLContext(seed: 1);
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 100);
        options.MaxAttemptsFactor = 1.1;
        options.FidelityThreshold = 0.95; // classify-and-map gives the answered label 0.9: every sample is dropped
        var run = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml));
        Assert.Equal(0, run.Report.Extraction.Kept.Values.Sum());
        Assert.All(run.Report.Extraction.Generated.Values, generated => Assert.Equal(110, generated));
    }

    /// <summary>
    /// The extractor keeps a copy of the options it was made with, as ML.NET's estimators do: edited afterwards, the
    /// caller's object changed what Fit asked for (and paid for), with settings that were never checked.
    /// </summary>
    [Fact]
    public async Task OptionsEditedAfterTheExtractorIsMadeChangeNothing()
    {
        await using var server = await BlackBoxCheckpointTests.DeterministicTeacher();
        var ml = new MLContext(seed: 1);
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2);
        var extractor = ml.RetriKT().BlackBoxKnowledgeExtractor(options);
        options.SamplesPerLabel = 3;
        options.MaxWords = 1; // below MinWords: refused when made
        var run = extractor.Fit(BlackBoxExtractionTests.StoryData(ml));
        Assert.Equal(4, run.Report.Extraction.Kept.Values.Sum());
    }
}
