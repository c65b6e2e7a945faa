namespace RetriKT.Samples;

/// <summary>
/// The switches of a server sample's command line, checked against the settings it reads. ASP.NET's configuration
/// takes any <c>--Name value</c>, and binding skips names it does not know, so a misspelt switch went unseen:
/// <c>--ModlePath new.zip</c> served appsettings.json's model.zip, <c>--BatchWindow 20</c> kept the default window.
/// </summary>
internal static class CommandLineSwitches
{
    /// <summary>Switches of the host itself, which every ASP.NET app takes.</summary>
    private static readonly string[] HostSettings =
        ["urls", "http_ports", "https_ports", "environment", "contentRoot", "applicationName", "AllowedHosts", "shutdownTimeoutSeconds", "preventHostingStartup", "hostingStartupAssemblies", "hostingStartupExcludeAssemblies"];

    /// <summary>Sections of the host's own whose keys are not checked here (log levels, endpoints).</summary>
    private static readonly string[] HostSections = ["Logging", "Kestrel"];

    /// <summary>
    /// Refuses the first switch (<c>--Name value</c>, <c>--Name=value</c>, <c>/Name value</c>) that names neither one of
    /// <paramref name="settings"/> (a section's setting as <c>Section:Name</c>) nor the host's own; names are compared as
    /// configuration compares them, ignoring case. Refuses as well what configuration skips without a word: a switch with no
    /// value (the last argument, or one followed by another switch), and an argument that is no switch (<c>model.zip</c> alone,
    /// <c>-ModelPath</c> with one dash). <c>--ModelPath $MODEL</c> with the variable unset served appsettings.json's model.zip,
    /// one found in the working folder.
    /// </summary>
    /// <exception cref="ArgumentException">A switch names no setting or has no value, or an argument is no switch (the message lists the settings).</exception>
    public static void Check(IReadOnlyList<string> args, IReadOnlyCollection<string> settings)
    {
        string Settings() => $"this server's settings are {string.Join(", ", settings.Select(s => "--" + s))} (and the host's: {HostSwitches})";
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            string? name = arg.StartsWith("--", StringComparison.Ordinal) ? arg[2..] : arg.StartsWith('/') ? arg[1..] : null;
            if (name is null)
                throw new ArgumentException($"Unexpected argument '{arg}': settings are given as --Name value or --Name=value; {Settings()}.");
            int equals = name.IndexOf('=');
            if (equals >= 0) name = name[..equals];
            if (!settings.Contains(name, StringComparer.OrdinalIgnoreCase) && !HostSettings.Contains(name, StringComparer.OrdinalIgnoreCase)
                && !HostSections.Any(s => name.StartsWith(s + ":", StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"Unknown setting '{arg}'; {Settings()}.");
            if (equals >= 0) continue;
            if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"Setting '{arg}' has no value; give it as {arg} <value> or {arg}=<value>.");
            i++; // the next argument is the value
        }
    }

    /// <summary>
    /// Whether the command line asks for help (<c>--help</c>, <c>-h</c> or <c>-?</c> anywhere): the servers then print
    /// <see cref="Usage{T}"/> and exit with code 0 (<c>--help</c> was refused as an unknown setting, exit code 2).
    /// </summary>
    public static bool AsksForHelp(IReadOnlyList<string> args) => args.Any(a => a is "--help" or "-h" or "-?");

    /// <summary>
    /// A server sample's usage: <paramref name="synopsis"/>, <paramref name="settings"/> (name and what it is), then each
    /// setting of <typeparamref name="T"/> (under <paramref name="section"/>) with its default, then the host's.
    /// </summary>
    public static string Usage<T>(string synopsis, IEnumerable<string> settings, string? section = null) where T : new()
    {
        var defaults = new T();
        var lines = new List<string> { synopsis, "", "Settings (--Name value or --Name=value on the command line; also read from the host's configuration: environment variables, appsettings.json where there is one):" };
        lines.AddRange(settings.Select(line => "  " + line));
        foreach (var (name, property) in Bound<T>(section))
            lines.Add($"  --{name} (default: {property.GetValue(defaults) switch { null or "" => "none", string text => $"\"{text}\"", var value => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) }})");
        lines.Add($"Host settings: {HostSwitches} (ASP.NET's own).");
        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>The settings a class binds: its public properties' names, under <paramref name="section"/> when given.</summary>
    public static IEnumerable<string> Of<T>(string? section = null) => Bound<T>(section).Select(b => b.Name);

    /// <summary>The properties a class binds, each with its setting's name (under <paramref name="section"/> when given).</summary>
    private static IEnumerable<(string Name, System.Reflection.PropertyInfo Property)> Bound<T>(string? section)
        => typeof(T).GetProperties().Where(p => p.CanWrite).Select(p => (section is null ? p.Name : $"{section}:{p.Name}", p));

    /// <summary>The host's own switches as the messages name them.</summary>
    private const string HostSwitches = "--urls, --environment, --Logging:..., --Kestrel:...";
}
