using Microsoft.Extensions.AI;
using OpenAI.Chat;

namespace RetriKT.MLNet.BlackBox;

/// <summary>
/// Soft labels from a black-box teacher's classification answer. With log-probabilities: at the first answer position
/// where some returned token starts a label word, each label's score is the best log-probability among the tokens that
/// start its word (and no other label's); labels not among the returned alternatives get the lowest returned value
/// minus ln 2 (they are less likely than everything shown); a softmax over labels gives the soft label. Without them:
/// the answer's first word is matched to a label word or name, which gets <see cref="BlackBoxExtractorOptions.AnswerConfidence"/>.
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
        foreach (var position in positions)
        {
            var alternatives = position.TopLogProbabilities.Select(t => (t.Token, t.LogProbability)).Append((position.Token, position.LogProbability)).ToList();
            var scores = new double[_words.Length];
            Array.Fill(scores, double.NegativeInfinity);
            bool any = false;
            foreach (var (token, logProb) in alternatives)
                if (LabelOf(token, prefix: true) is int label && logProb > scores[label]) { scores[label] = logProb; any = true; }
            if (!any)
            {
                if (alternatives.All(a => string.IsNullOrWhiteSpace(a.Token))) continue; // leading whitespace: look at the next position
                return null;
            }
            double floor = alternatives.Min(a => (double)a.LogProbability) - Math.Log(2);
            for (int l = 0; l < scores.Length; l++) if (double.IsNegativeInfinity(scores[l])) scores[l] = floor;
            double max = scores.Max();
            var exp = scores.Select(s => Math.Exp(s - max)).ToArray();
            double sum = exp.Sum();
            return exp.Select(x => (float)(x / sum)).ToArray();
        }
        return null;
    }

    /// <summary>Soft label from the answer text, or null when its first word names no label.</summary>
    public float[]? FromAnswer(string? answer)
    {
        var first = (answer ?? "").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        if (first is null || LabelOf(first, prefix: false) is not int label) return null;
        int n = _words.Length;
        var p = new float[n];
        for (int l = 0; l < n; l++) p[l] = n == 1 ? 1f : (float)(l == label ? _confidence : (1 - _confidence) / (n - 1));
        return p;
    }

    /// <summary>The one label whose word (or name) the token begins (prefix) or equals; null when none or several.</summary>
    private int? LabelOf(string token, bool prefix)
    {
        var t = Normalise(token);
        if (t.Length == 0) return null;
        int? found = null;
        for (int l = 0; l < _words.Length; l++)
        {
            bool match = prefix ? _words[l].StartsWith(t, StringComparison.Ordinal) : _words[l] == t || _names[l] == t;
            if (!match) continue;
            if (found is not null) return null;
            found = l;
        }
        return found;
    }

    private static string Normalise(string s) => new string(s.Trim().ToLowerInvariant().Where(c => char.IsLetterOrDigit(c) || c == '_').ToArray());
}
