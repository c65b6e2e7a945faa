using Microsoft.Extensions.AI;
using OpenAI.Chat;

namespace RetriKT.MLNet.BlackBox;

/// <summary>
/// Soft labels from a black-box teacher's classification answer. With log-probabilities: at the first answer position
/// where some returned token starts a label word, each label's score is the best log-probability among the tokens that
/// start its word (and no other label's); labels not among the returned alternatives get the lowest returned value
/// minus ln 2 (they are less likely than everything shown); a softmax over labels gives the soft label. When the answer's
/// token there starts several label words (a small vocabulary splits "terrible" and "terrific" after "terr"), the labels
/// it leaves open are scored at the next positions the same way, each adding the log-probability of the path that spelled
/// them so far, and a token that ends a word (a space, punctuation) scores the open label spelled exactly so far. Without
/// log-probabilities: the answer's first word is matched to a label word or name, which gets
/// <see cref="BlackBoxExtractorOptions.AnswerConfidence"/>.
/// </summary>
internal sealed class TeacherSoftLabels
{
    private readonly string[] _words;
    private readonly string[] _names;
    private readonly double _confidence;

    public TeacherSoftLabels(IReadOnlyList<string> labels, IReadOnlyList<string> labelWords, double answerConfidence)
    {
        _names = labels.Select(Normalise).ToArray();
        _words = labelWords.Select(Normalise).ToArray();
        _confidence = answerConfidence;
    }

    /// <summary>The request options that ask an OpenAI-compatible endpoint for log-probabilities (other clients ignore them).</summary>
    public static void AskForLogProbs(ChatOptions options, IChatClient client, int top)
    {
        if (client.GetService<ChatClient>() is null) return;
        options.RawRepresentationFactory = _ => new ChatCompletionOptions { IncludeLogProbabilities = true, TopLogProbabilityCount = top };
    }

    /// <summary>Soft label from the response's token log-probabilities, or null when it has none that map to a label.</summary>
    public float[]? FromLogProbs(ChatResponse response)
    {
        // Microsoft.Extensions.AI.OpenAI 10.x leaves them on the raw ChatCompletion; earlier versions copied them to AdditionalProperties.
        var positions = (response.RawRepresentation as ChatCompletion)?.ContentTokenLogProbabilities
            ?? response.AdditionalProperties?.GetValueOrDefault("ContentTokenLogProbabilities") as IEnumerable<ChatTokenLogProbabilityDetails>;
        if (positions is null) return null;
        int n = _words.Length;
        var scores = new double[n];
        Array.Fill(scores, double.NegativeInfinity);
        var floors = new double[n]; // where a label stopped being followed: the lowest value returned there, minus ln 2
        var open = Enumerable.Range(0, n).ToList(); // labels whose word starts with what the answer has spelled so far
        string spelled = "";
        double path = 0; // log-probability of the answer's tokens that spelled it
        foreach (var position in positions)
        {
            var alternatives = position.TopLogProbabilities.Select(t => (t.Token, t.LogProbability)).Append((position.Token, position.LogProbability)).ToList();
            bool started = spelled.Length > 0;
            if (!started && alternatives.All(a => string.IsNullOrWhiteSpace(a.Token))) continue; // leading whitespace: look at the next position
            foreach (var (token, logProb) in alternatives)
            {
                var piece = Normalise(token);
                // After a spelled prefix, a token that does not continue the word ends it: the label spelled exactly.
                int? label = started && (piece.Length == 0 || char.IsWhiteSpace(token[0]))
                    ? open.Where(l => _words[l] == spelled).Select(l => (int?)l).FirstOrDefault()
                    : piece.Length == 0 ? null : OnlyLabelStartingWith(spelled + piece, open);
                if (label is int l && path + logProb > scores[l]) scores[l] = path + logProb;
            }
            double floor = path + alternatives.Min(a => (double)a.LogProbability) - Math.Log(2);
            foreach (var l in open) floors[l] = floor;
            // Follow the answer's own token when it spells the start of several label words.
            var chosen = Normalise(position.Token);
            var still = chosen.Length == 0 || (started && char.IsWhiteSpace(position.Token[0])) ? [] : open.Where(l => _words[l].StartsWith(spelled + chosen, StringComparison.Ordinal)).ToList();
            if (still.Count < 2) break;
            spelled += chosen;
            path += position.LogProbability;
            open = still;
        }
        if (scores.All(double.IsNegativeInfinity)) return null;
        for (int l = 0; l < n; l++) if (double.IsNegativeInfinity(scores[l])) scores[l] = floors[l];
        double max = scores.Max();
        var exp = scores.Select(s => Math.Exp(s - max)).ToArray();
        double sum = exp.Sum();
        return exp.Select(x => (float)(x / sum)).ToArray();
    }

    /// <summary>Soft label from the answer text, or null when its first word names no label.</summary>
    public float[]? FromAnswer(string? answer)
    {
        var first = (answer ?? "").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        if (first is null || LabelOf(first) is not int label) return null;
        int n = _words.Length;
        var p = new float[n];
        for (int l = 0; l < n; l++) p[l] = n == 1 ? 1f : (float)(l == label ? _confidence : (1 - _confidence) / (n - 1));
        return p;
    }

    /// <summary>The one label whose word or name <paramref name="token"/> equals; null when none or several.</summary>
    private int? LabelOf(string token)
    {
        var t = Normalise(token);
        if (t.Length == 0) return null;
        var matches = Enumerable.Range(0, _words.Length).Where(l => _words[l] == t || _names[l] == t).Take(2).ToList();
        return matches.Count == 1 ? matches[0] : null;
    }

    /// <summary>The one label among <paramref name="candidates"/> whose word starts with <paramref name="prefix"/>; null when none or several.</summary>
    private int? OnlyLabelStartingWith(string prefix, IEnumerable<int> candidates)
    {
        var matches = candidates.Where(l => _words[l].StartsWith(prefix, StringComparison.Ordinal)).Take(2).ToList();
        return matches.Count == 1 ? matches[0] : null;
    }

    private static string Normalise(string s) => new string(s.Trim().ToLowerInvariant().Where(c => char.IsLetterOrDigit(c) || c == '_').ToArray());
}
