using Microsoft.Extensions.AI;
using OpenAI.Chat;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>
/// Soft labels from an answer's token log-probabilities, on responses shaped as the OpenAI client returns them (the
/// official model factory builds the per-token details). Label words that share their first token are scored through the
/// answer's next positions instead of being dropped; words of one token each score exactly as before.
/// </summary>
public class TeacherSoftLabelsTests
{
    private static ChatResponse Answer(params (string Token, float LogProb, (string Token, float LogProb)[] Top)[] positions)
    {
        var details = positions.Select(p => OpenAIChatModelFactory.ChatTokenLogProbabilityDetails(p.Token, p.LogProb, null,
            p.Top.Select(t => OpenAIChatModelFactory.ChatTokenTopLogProbabilityDetails(t.Token, t.LogProb, null)).ToList())).ToList();
        return new ChatResponse(new Microsoft.Extensions.AI.ChatMessage(ChatRole.Assistant, string.Concat(positions.Select(p => p.Token))))
        {
            AdditionalProperties = new AdditionalPropertiesDictionary { ["ContentTokenLogProbabilities"] = details },
        };
    }

    private static double[] Softmax(params double[] scores)
    {
        double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
        return scores.Select(s => Math.Exp(s - max) / sum).ToArray();
    }

    private static void Near(double[] expected, float[]? actual)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 5);
    }

    [Fact]
    public void WordsSharingTheirFirstTokenAreScoredAtTheNextPosition()
    {
        var labels = new TeacherSoftLabels(["neg", "pos", "other"], ["terrible", "terrific", "great"], 0.9);
        var soft = labels.FromLogProbs(Answer(
            ("\n", -0.01f, [("\n", -0.01f)]), // leading whitespace: skipped
            (" terr", -0.1f, [(" terr", -0.1f), (" great", -3.0f), (" fine", -4.0f)]),
            ("ible", -0.4f, [("ible", -0.4f), ("ific", -1.2f), ("ain", -2.5f)]),
            (".", -0.2f, [(".", -0.2f)])));
        Near(Softmax(-0.1 - 0.4, -0.1 - 1.2, -3.0), soft);
    }

    [Fact]
    public void AWordThatEndsWhereALongerOneGoesOnIsScoredByTheTokenThatEndsIt()
    {
        var labels = new TeacherSoftLabels(["no", "not", "yes"], ["no", "not", "yes"], 0.9);
        var soft = labels.FromLogProbs(Answer(
            ("no", -0.2f, [("no", -0.2f), ("yes", -2.0f)]),
            (".", -0.3f, [(".", -0.3f), ("t", -1.5f), (" way", -2.2f)])));
        Near(Softmax(-0.2 - 0.3, -0.2 - 1.5, -2.0), soft);
    }

    [Fact]
    public void AnOpenLabelMissingFromTheNextPositionsAlternativesGetsThatPositionsFloor()
    {
        var labels = new TeacherSoftLabels(["neg", "pos"], ["terrible", "terrific"], 0.9);
        var soft = labels.FromLogProbs(Answer(
            (" terr", -0.1f, [(" terr", -0.1f), (" good", -3.0f)]),
            ("ible", -0.4f, [("ible", -0.4f), ("ibly", -2.0f)])));
        Near(Softmax(-0.1 - 0.4, -0.1 - 2.0 - Math.Log(2)), soft);
    }

    [Fact]
    public void OneTokenWordsScoreAtTheFirstPositionAsBefore()
    {
        var labels = new TeacherSoftLabels(["neg", "pos"], ["terrible", "great"], 0.9);
        Near(Softmax(-1.9, -0.2), labels.FromLogProbs(Answer((" great", -0.2f, [(" great", -0.2f), (" terrible", -1.9f), (" good", -2.5f)]))));
        // A label not among the alternatives: the lowest value shown, minus ln 2.
        Near(Softmax(-2.5 - Math.Log(2), -0.2), labels.FromLogProbs(Answer((" great", -0.2f, [(" great", -0.2f), (" good", -2.5f)]))));
        // No token starts a label word: no soft label (the caller falls back or drops the sample).
        Assert.Null(labels.FromLogProbs(Answer((" maybe", -0.2f, [(" maybe", -0.2f), (" good", -2.5f)]))));
    }
}
