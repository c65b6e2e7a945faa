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
}
